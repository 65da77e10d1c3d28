#!/usr/bin/env bash
# Refresh constraints/lock.txt: the newest versions pyproject.toml allows, resolved in a clean venv
# and frozen (transitive ones included, aiosd itself left out). Run .ci/run afterwards and commit
# the new lock only when it passes: the lock is "the versions the suite last passed with".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$(mktemp -d /tmp/aiosd-lock.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q "$repo[test,lint]"
{
  echo "# The exact versions the suite last passed with (python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')); written by constraints/refresh.sh."
  echo "# The README's install commands use it: pip install -c constraints/lock.txt ..."
  "$venv/bin/pip" freeze --exclude aiosd
} > "$repo/constraints/lock.txt"
echo "wrote $repo/constraints/lock.txt; now run .ci/run and commit it if it passes"
