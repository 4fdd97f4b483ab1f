#!/usr/bin/env bash
# Set up this machine (see setup.sh) and run the agent in the foreground on the
# example config (examples/xavi.json: all four services from the locally built
# images, Postgres and Valkey published on 127.0.0.1). The config and secrets
# live in .demo/config, the files mounted into containers in .demo/state.
# Stop it with Ctrl-C: the containers keep running, as they do in production.
# Remove them with: docker rm -f xavi-postgres xavi-valkey xavi-app xavi-backupbot
#
# Arguments are passed to the agent (for example: --log-format json).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${XAVI_VENV:-$repo/.venv}"
demo="$repo/.demo"

bash "$repo/scripts/setup.sh"
mkdir -p "$demo/config"
chmod 700 "$demo/config"
if [ ! -f "$demo/config/xavi.json" ]; then
    cp "$repo/examples/xavi.json" "$demo/config/xavi.json"
fi
echo "run-example: config in $demo/config/xavi.json (edit it and send SIGHUP to reload)"
exec "$venv/bin/python" -m xavi --config-dir "$demo/config" --state-dir "$demo/state" "$@"
