#!/usr/bin/env bash
# Runs the client READMEs' install and first call exactly as written, against
# a running server (CRM_GRPC, CRM_TOKEN set):
#   scripts/with-server.sh scripts/client-readmes.sh
#
# For each client it builds the package into target/clients/ (git-ignored):
# `npm pack` in clients/typescript (its prepare script compiles dist/, so the
# tarball needs no build where it is installed) and `python -m build --wheel`
# of clients/python (build and setuptools pinned, in target/clients/py-build).
# Then, in a fresh directory outside the repo with that package file copied
# in, it runs the README's ```sh block between <!-- readme-install:begin -->
# and <!-- readme-install:end --> (a new npm project / virtualenv installing
# the tarball / wheel, not the source tree), and the code between
# <!-- readme-test:begin --> and <!-- readme-test:end -->: the TypeScript one
# type-checked by tsc (strict, the client's pinned typescript and
# @types/node) as first-call.ts and run by node as first-call.mjs, the Python
# one run as first_call.py. The READMEs' other ts / python snippets are not
# run, but must not use undefined names (tsc; Python's symtable). Every
# dependency version is pinned: the TypeScript package's own exact pins, and
# for Python clients/python/requirements.txt as pip constraints.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${CRM_GRPC:?not set: run as scripts/with-server.sh scripts/client-readmes.sh}"
: "${CRM_TOKEN:?not set: run as scripts/with-server.sh scripts/client-readmes.sh}"

ts=clients/typescript
py=clients/python
out="$root/target/clients"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/crm-client-readmes.XXXXXX")
cleanup() {
    local status=$?
    if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "client-readmes: FAILED; kept $work" >&2; fi
}
trap cleanup EXIT

step() { printf '\n--> client-readmes: %s\n' "$*"; }
# Every step is bounded: a hung install or call fails the run.
bounded() { local secs=$1; shift; timeout --kill-after=10 "$secs" "$@"; }
# quiet LOG CMD...: CMD's output goes to LOG, shown only if CMD fails.
quiet() { local log=$1; shift; "$@" >"$log" 2>&1 || { local s=$?; cat "$log" >&2; return "$s"; }; }
# run_block FILE: shows the README block, then runs it as one bash script.
run_block() { sed 's/^/  $ /' "$1"; bounded 300 bash -euo pipefail "$1"; }

# blocks README MARKER: the lines of the fenced blocks between
# <!-- MARKER:begin --> and <!-- MARKER:end --> (fences dropped); fails if none.
blocks() {
    awk -v begin="<!-- $2:begin -->" -v end="<!-- $2:end -->" '
        $0 == begin  { on = 1; n++; next }
        $0 == end    { on = 0; next }
        on && /^```/ { next }
        on           { print }
        END          { exit n ? 0 : 1 }
    ' "$1" || { echo "client-readmes: no $2 block in $1" >&2; return 1; }
}

# other_blocks README LANG DIR PREFIX EXT PREAMBLE: writes each ```LANG block
# outside the readme-test / readme-install markers to DIR/PREFIX<n>.EXT, with
# PREAMBLE (awk escapes: \n) first; prints how many.
other_blocks() {
    awk -v lang="$2" -v dir="$3" -v prefix="$4" -v ext="$5" -v pre="$6" '
        /^<!-- readme-(test|install):begin -->$/ { marked = 1; next }
        /^<!-- readme-(test|install):end -->$/   { marked = 0; next }
        !marked && !in_block && $0 == "```" lang { in_block = 1; n++; f = dir "/" prefix n "." ext; printf "%s", pre > f; next }
        in_block && /^```/                       { in_block = 0; close(f); next }
        in_block                                 { print > f }
        END                                      { print n + 0 }
    ' "$1"
}

node -e 'const [M] = process.versions.node.split(".").map(Number); if (M < 20) { console.error(`Node >= 20 required, found ${process.version}`); process.exit(1); }'

# ------------------------------------------------------------- TypeScript
step "typescript: npm ci (scripts off), then npm pack builds dist/ itself"
(cd "$ts" && bounded 300 npm ci --no-audit --no-fund --ignore-scripts)
rm -rf "$ts/dist" "$out"/crm-client-*.tgz
tgz_name=$(cd "$ts" && bounded 300 npm pack --pack-destination "$out" 2>"$work/npm-pack.log" | tail -n 1) \
    || { cat "$work/npm-pack.log" >&2; exit 1; }
tgz="$out/$tgz_name"
[ -f "$tgz" ] || { echo "client-readmes: npm pack made no $tgz" >&2; exit 1; }
listing=$(tar -tzf "$tgz")
for f in package/dist/src/index.js package/dist/src/index.d.ts package/package.json; do
    grep -qx "$f" <<<"$listing" || { echo "client-readmes: $f missing from $tgz" >&2; exit 1; }
done
echo "built $tgz"

step "typescript: the README's install, in a fresh project ($work/ts)"
mkdir "$work/ts"
cp "$tgz" "$work/ts/"
blocks "$ts/README.md" readme-install >"$work/ts-install.sh"
(cd "$work/ts" && run_block "$work/ts-install.sh")
[ ! -L "$work/ts/node_modules/@crm/client" ] && [ -f "$work/ts/node_modules/@crm/client/dist/src/index.js" ] \
    || { echo "client-readmes: @crm/client is not installed from the tarball in $work/ts" >&2; exit 1; }

step "typescript: the README's snippets type-check (tsc --strict, typescript and @types/node as the client pins)"
tsver=$(node -p 'require("./'"$ts"'/package.json").devDependencies.typescript')
nodetypes=$(node -p 'require("./'"$ts"'/package.json").devDependencies["@types/node"]')
(cd "$work/ts" && bounded 300 npm install --no-save --prefer-offline --no-audit --no-fund \
    "typescript@$tsver" "@types/node@$nodetypes")
blocks "$ts/README.md" readme-test >"$work/ts/first-call.ts"
n=$(other_blocks "$ts/README.md" ts "$work/ts" snippet- ts \
    'import { CrmError, type CrmClient } from "@crm/client";\ndeclare const client: CrmClient;\nvoid CrmError;\n')
cat >"$work/ts/tsconfig.json" <<'EOF'
{
  "compilerOptions": {
    "target": "ES2022",
    "lib": ["ES2022", "DOM"],
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "types": ["node"],
    "skipLibCheck": false,
    "noEmit": true
  },
  "include": ["*.ts"]
}
EOF
(cd "$work/ts" && bounded 300 node_modules/.bin/tsc -p tsconfig.json)
echo "first-call.ts and $n other snippet(s) type-check"

step "typescript: the README's first call (node first-call.mjs)"
cp "$work/ts/first-call.ts" "$work/ts/first-call.mjs"
(cd "$work/ts" && bounded 120 node first-call.mjs)

# ------------------------------------------------------------------ Python
step "python: python -m build --wheel (build, setuptools pinned; $out/py-build)"
bvenv="$out/py-build"
if [ ! -x "$bvenv/bin/python" ]; then
    if ! python3 -m venv "$bvenv"; then
        # no ensurepip (Debian without python3-venv): fall back to virtualenv
        rm -rf "$bvenv"
        python3 -m pip install --quiet virtualenv==20.29.3
        python3 -m virtualenv --quiet "$bvenv"
    fi
fi
bounded 300 "$bvenv/bin/python" -m pip install --quiet --disable-pip-version-check \
    build==1.6.1 pyproject_hooks==1.3.3 packaging==26.4 setuptools==80.9.0
rm -f "$out"/crm_client-*.whl
(cd "$py" && quiet "$work/py-build.log" bounded 300 "$bvenv/bin/python" -m build --wheel --no-isolation --outdir "$out" .)
rm -rf "$py/build" "$py"/src/*.egg-info
whl=$(ls "$out"/crm_client-*.whl)
[ "$(wc -l <<<"$whl")" -eq 1 ] || { echo "client-readmes: expected one wheel in $out: $whl" >&2; exit 1; }
python3 - "$whl" crm_client/client.py crm_client/py.typed crm_client/v1/account_pb2.pyi <<'EOF'
import sys, zipfile
missing = set(sys.argv[2:]) - set(zipfile.ZipFile(sys.argv[1]).namelist())
sys.exit(f"client-readmes: {sorted(missing)} missing from {sys.argv[1]}" if missing else None)
EOF
echo "built $whl"

step "python: the README's install, in a fresh virtualenv ($work/py), versions from requirements.txt"
mkdir "$work/py"
cp "$whl" "$work/py/"
blocks "$py/README.md" readme-install >"$work/py-install.sh"
(cd "$work/py" && PIP_CONSTRAINT="$root/$py/requirements.txt" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    run_block "$work/py-install.sh")
where=$(cd "$work/py" && .venv/bin/python -c 'import crm_client; print(crm_client.__file__)')
case "$where" in
    "$work/py/.venv/"*) echo "crm_client from $where" ;;
    *) echo "client-readmes: crm_client imported from $where, not the fresh venv" >&2; exit 1 ;;
esac

step "python: the README's snippets use no undefined names"
blocks "$py/README.md" readme-test >"$work/py/first_call.py"
n=$(other_blocks "$py/README.md" python "$work/py" snippet- py '')
files=("$work/py/first_call.py")
for i in $(seq 1 "$n"); do files+=("$work/py/snippet-$i.py"); done
python3 - "${files[@]}" <<'EOF'
# The blocks in README order, as one module: every name read at module level,
# or as a global in a function, must be bound somewhere in it or be a builtin.
import builtins, symtable, sys

src = "\n".join(open(f).read() for f in sys.argv[1:])
top = symtable.symtable(src, "README.md", "exec")
bound = set(dir(builtins)) | {s.get_name() for s in top.get_symbols()
                              if s.is_assigned() or s.is_imported() or s.is_namespace()}
missing = set()
def walk(t):
    for s in t.get_symbols():
        if s.is_referenced() and (t is top or s.is_global()) and s.get_name() not in bound:
            missing.add(s.get_name())
    for c in t.get_children():
        walk(c)
walk(top)
if missing:
    sys.exit(f"client-readmes: undefined in clients/python/README.md's snippets: {sorted(missing)}")
print(f"{len(sys.argv) - 1} block(s): no undefined names")
EOF

step "python: the README's first call (python first_call.py)"
(cd "$work/py" && bounded 120 .venv/bin/python first_call.py)

echo
echo "client-readmes: both READMEs' install and first call ran as written ($tgz_name, $(basename "$whl"))"
