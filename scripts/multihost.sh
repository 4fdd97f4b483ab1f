#!/usr/bin/env bash
# Build and drive a rig of simulated hosts on this machine, for trying Xavi's
# multi-host behaviour by hand. The same rig backs tests/multihost/.
#
# Each host (hostA, hostB, ...) is a network namespace xavi-hostX with its own
# dockerd, joined by a veth pair to the bridge xavibr0 (10.77.0.1/24). Hosts
# get 10.77.0.11, .12, ... and no default route: their traffic stays inside the
# rig. A port published on one host's address is reached from containers on
# the others through Docker's ordinary NAT. Every host gets the local images
# (xavi-local/postgres:15, valkey:8, app, backupbot; build them with
# scripts/build-images.sh). The only change to the root namespace besides the
# bridge and the veths is one rule, iptables -I FORWARD -i xavibr0 -o xavibr0
# -j ACCEPT, removed again by `down`. See tests/multihost/rig.py for details.
#
# Usage: multihost.sh COMMAND
#   up N              build N hosts (1 to 26) and print their DOCKER_HOST values
#   down              tear down the rig built by `up` and every rig whose test
#                     process is gone. Rigs of running tests are left alone.
#   status            list the rigs with each host's address, link, power state
#                     and dockerd RSS
#   exec HOST CMD...  run CMD inside HOST's namespaces (a shell without CMD)
#   partition HOST    take HOST's link down (every other host loses it)
#   heal HOST         bring HOST's link back up
#   poweroff HOST     kill HOST's PID 1: its dockerd, containers and agent die
#   boot HOST         start HOST's dockerd again; images and containers remain
#
# To use a host's engine: DOCKER_HOST=unix:///var/tmp/xavi-rig-cli/hostB/docker.sock docker ps
# One rig at a time per machine, because the bridge and namespace names are
# fixed. Needs root, iproute2, iptables, util-linux (nsenter, unshare), tini
# and docker.io (scripts/install-deps.sh).
#
# Environment:
#   XAVI_RIG_DIR   work folder of the rig built by `up`
#                  (default /var/tmp/xavi-rig-cli)
#   XAVI_PYTHON    Python with the docker SDK (default python3)
set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
REPO_ROOT=$(dirname "$(dirname "${SCRIPT_PATH}")")
readonly SCRIPT_PATH REPO_ROOT

if [[ ${EUID} -ne 0 ]]; then
    echo "multihost: error: must run as root (namespaces, bridge, iptables), running as uid ${EUID}" >&2
    exit 1
fi

export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${XAVI_PYTHON:-python3}" -m tests.multihost.rig "$@"
