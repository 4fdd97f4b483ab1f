#!/usr/bin/env bash
# Set up everything the tests need (see setup.sh), build the Go memberlist
# peer, start the local registry with credentials, and run the whole test
# suite against the real Docker Engine and the real Go peer.
#
# Arguments are passed to pytest (for example: -m "not slow", -k supervisor).
# Exits with pytest's status, except that "no tests collected" (5) is a failure
# with a message, because a green run must have tested something.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${XAVI_VENV:-$repo/.venv}"

bash "$repo/scripts/setup.sh"
if [ -f "$repo/tests/interop/peer/main.go" ]; then
    bash "$repo/scripts/build-go-peer.sh" >/dev/null
fi
bash "$repo/scripts/start-registry.sh"

cd "$repo"
# A multi-host rig left by a killed run (its owner process is gone) would make
# the rig tests fail; remove such stale rigs, and leave live ones alone.
"$venv/bin/python" -m tests.multihost.rig down || true
status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests; check the arguments and the tests/ folder" >&2
    exit 1
fi
exit "$status"
