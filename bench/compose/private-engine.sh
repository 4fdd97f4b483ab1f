#!/usr/bin/env bash
# Start or stop a private Docker engine for bench/bench_stack.py, so the
# benchmark neither removes nor meets anyone else's xavi-* containers on a
# shared engine.
#
# `start DIR` runs dockerd in its own network and mount namespaces
# (unshare --net --mount), with its data root, exec root, pid file and socket
# under DIR, copies the four xavi-local/* images into it from the main engine
# (docker save | docker load) and prints the DOCKER_HOST value to use.
# Published ports then exist only inside that network namespace; the
# benchmark needs none of them, because it watches containers through the
# engine's socket. `stop DIR` stops that dockerd by the PID in its pid file
# and deletes DIR.
#
# Usage:
#   bench/compose/private-engine.sh start DIR
#   DOCKER_HOST=unix://DIR/docker.sock python bench/bench_stack.py
#   bench/compose/private-engine.sh stop DIR
# Needs root, dockerd and unshare. Environment: XAVI_BENCH_ENGINE_TIMEOUT,
# seconds to wait for the engine to respond (default 60).
set -euo pipefail

readonly IMAGES=(xavi-local/postgres:15 xavi-local/valkey:8 xavi-local/app:latest
    xavi-local/backupbot:latest)
readonly TIMEOUT=${XAVI_BENCH_ENGINE_TIMEOUT:-60}

fail() { echo "private-engine: error: $*" >&2; exit 1; }

start() {
    local dir=$1
    [[ ${EUID} -eq 0 ]] || fail "must run as root to start dockerd, running as uid ${EUID}"
    [[ ! -e ${dir}/docker.sock ]] || fail "${dir}/docker.sock exists; run 'stop ${dir}' first"
    mkdir -p "${dir}/data" "${dir}/exec"
    dir=$(readlink -f "${dir}")
    # The inner shell brings up loopback, then becomes dockerd (exec), so
    # dockerd's PID is the one in the pid file. Its $1 is DIR, expanded there.
    # shellcheck disable=SC2016
    setsid unshare --net --mount --fork -- bash -c '
        ip link set lo up
        exec dockerd --data-root "$1/data" --exec-root "$1/exec" --pidfile "$1/dockerd.pid" \
            -H "unix://$1/docker.sock"' private-engine "${dir}" \
        >"${dir}/dockerd.log" 2>&1 </dev/null &

    local deadline=$((SECONDS + TIMEOUT))
    until docker -H "unix://${dir}/docker.sock" info >/dev/null 2>&1; do
        ((SECONDS < deadline)) || {
            tail -n 20 "${dir}/dockerd.log" >&2
            fail "the engine did not respond within ${TIMEOUT} s; log ${dir}/dockerd.log"
        }
        sleep 0.2
    done
    docker save "${IMAGES[@]}" | docker -H "unix://${dir}/docker.sock" load >/dev/null ||
        fail "copying the images failed; run scripts/build-images.sh on the main engine first"
    echo "private-engine: dockerd pid $(cat "${dir}/dockerd.pid") ready with the images" >&2
    echo "unix://${dir}/docker.sock"
}

stop() {
    local dir=$1 pid
    [[ -f ${dir}/dockerd.pid ]] || fail "no ${dir}/dockerd.pid; nothing to stop"
    pid=$(cat "${dir}/dockerd.pid")
    [[ $(cat "/proc/${pid}/comm" 2>/dev/null) == dockerd ]] || fail "pid ${pid} is not a dockerd"
    kill -TERM "${pid}"
    local deadline=$((SECONDS + TIMEOUT))
    while kill -0 "${pid}" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "dockerd pid ${pid} still runs after ${TIMEOUT} s"
        sleep 0.2
    done
    rm -rf --one-file-system "${dir}"
    echo "private-engine: stopped dockerd pid ${pid} and deleted ${dir}" >&2
}

case ${1:-} in
    start | stop) [[ $# -eq 2 ]] || fail "usage: $0 start|stop DIR"; "$1" "$2" ;;
    *) fail "usage: $0 start|stop DIR" ;;
esac
