#!/usr/bin/env bash
# Prepare this machine for Xavi: Debian packages, a running Docker Engine, the
# locally built images, and a Python virtual environment in .venv with Xavi
# and its test dependencies installed. Every step is idempotent and cached, so
# a second run takes seconds. Needs root (apt-get, dockerd).
#
# Environment:
#   XAVI_VENV   the virtual environment to use (default <repo>/.venv)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${XAVI_VENV:-$repo/.venv}"

bash "$repo/scripts/install-deps.sh"
bash "$repo/scripts/start-dockerd.sh"
bash "$repo/scripts/build-images.sh"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.xavi-installed"
hash="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -e "$repo[test]"
    echo "$hash" > "$stamp"
fi
echo "setup: ready (python: $venv/bin/python)"
