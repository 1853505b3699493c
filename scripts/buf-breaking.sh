#!/usr/bin/env bash
# `buf breaking` for the crm.v1 contract (buf.yaml: FILE rules): the protos of
# the working tree against those of a base commit.
#
#   scripts/buf-breaking.sh [REF]
#
# The base is, in order: REF (or BUF_BREAKING_AGAINST), else HEAD when the
# working tree has uncommitted changes under proto/, third_party/ or buf.yaml
# (a developer checking an edit), else HEAD~1 (CI: a fresh clone of main whose
# HEAD is the commit under test, so its parent is main before it).
#
# A deliberate break: put the trailer `Buf-Breaking: allow` in the commit
# message; the violations are then printed and the script exits 0.
# No base commit (root commit) or no protos in it: says so and exits 0.
# Shallow clone without the base: fetches it from origin; if that fails, says
# SKIPPED and exits 0 (BUF_BREAKING_STRICT=1 makes that a failure).
# BUF: the buf binary (default .ci/tools/node_modules/.bin/buf, else on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

buf="${BUF:-.ci/tools/node_modules/.bin/buf}"
[ -x "$buf" ] || buf=$(command -v buf) || {
    echo "buf-breaking: no buf; npm install --prefix .ci/tools --no-save @bufbuild/buf@1.75.0" >&2
    exit 1
}
paths=(proto third_party buf.yaml)

skip() {
    echo "buf-breaking: SKIPPED: $*"
    [ "${BUF_BREAKING_STRICT:-0}" = 1 ] && exit 1
    exit 0
}

ref="${1:-${BUF_BREAKING_AGAINST:-}}"
allow=0
if [ -z "$ref" ]; then
    if [ -n "$(git status --porcelain -- "${paths[@]}")" ]; then
        ref=HEAD
        echo "buf-breaking: uncommitted proto changes: comparing the working tree with HEAD"
    else
        ref=HEAD~1
        if git log -1 --format=%B HEAD | grep -qiE '^Buf-Breaking:[[:space:]]*allow[[:space:]]*$'; then
            allow=1
        fi
    fi
fi

if ! base=$(git rev-parse --verify --quiet "$ref^{commit}"); then
    if [ "$ref" = HEAD~1 ] && [ "$(git rev-parse --is-shallow-repository)" = true ]; then
        echo "buf-breaking: shallow clone without HEAD~1: fetching one more commit"
        git fetch --quiet --deepen=1 origin 2>/dev/null || true
        base=$(git rev-parse --verify --quiet "HEAD~1^{commit}") \
            || skip "shallow clone and HEAD~1 could not be fetched; nothing to compare with"
    elif [ "$ref" = HEAD~1 ] && [ "$(git rev-list --parents -n1 HEAD | wc -w)" -eq 1 ]; then
        echo "buf-breaking: HEAD is the first commit: nothing to compare with"
        exit 0
    else
        echo "buf-breaking: cannot resolve '$ref' to a commit" >&2
        exit 1
    fi
fi

against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
# Only the paths the base has (buf.yaml and third_party may be younger).
present=()
for p in "${paths[@]}"; do
    [ -n "$(git ls-tree --name-only "$base" -- "$p")" ] && present+=("$p")
done
if [ ! -d proto ] || [[ ! " ${present[*]-} " =~ " proto " ]]; then
    echo "buf-breaking: $ref ($(git rev-parse --short "$base")) has no proto/: nothing to compare with"
    exit 0
fi
git archive "$base" -- "${present[@]}" | tar -x -C "$against"
# A base from before buf.yaml: read it with today's module layout.
[ -f "$against/buf.yaml" ] || cp buf.yaml "$against/buf.yaml"

echo "buf-breaking: $("$buf" --version) ; working tree vs $ref ($(git rev-parse --short "$base"))"
if "$buf" breaking --against "$against"; then
    echo "buf-breaking: no breaking change"
elif [ "$allow" = 1 ]; then
    echo "buf-breaking: breaking changes above are allowed by the commit's 'Buf-Breaking: allow' trailer"
else
    echo "buf-breaking: breaking changes against $ref (see above). If deliberate, add the trailer" >&2
    echo "  'Buf-Breaking: allow' to the commit message." >&2
    exit 1
fi
