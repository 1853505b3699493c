#!/usr/bin/env bash
# Rewrites the scope table of README.md ("Authorization", between the
# scopes markers) from the methods' required_scope option, as `crm scopes`
# prints it. The unit test auth::scope::the_readme_shows_the_enforced_table
# fails while the two differ.
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(cargo run --quiet -- scopes)
TABLE="$table" python3 - <<'PY'
import os, re
path = "README.md"
text = open(path).read()
new = "<!-- scopes:begin -->\n" + os.environ["TABLE"] + "\n<!-- scopes:end -->"
text, n = re.subn(r"<!-- scopes:begin -->\n.*?<!-- scopes:end -->", lambda _: new, text, flags=re.S)
assert n == 1, "README.md needs one pair of scopes markers"
open(path, "w").write(text)
PY
