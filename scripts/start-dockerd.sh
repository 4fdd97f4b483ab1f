#!/usr/bin/env bash
# Start the machine's Docker Engine (dockerd) in the background unless one
# already responds on /var/run/docker.sock.
#
# Works on a fresh machine and after every process was killed: stale pid files
# of dockerd and of the containerd it supervises, and a stale system containerd
# socket, are removed when no live process owns them. The started daemon is
# detached (setsid), logs to $XAVI_STATE_DIR/dockerd.log and stays running after
# this script exits. Prints the PID it started. Never stops a running daemon.
#
# Environment:
#   XAVI_STATE_DIR          state folder for the log and pid file
#                           (default /var/tmp/xavi-ci)
#   XAVI_DOCKERD_TIMEOUT    seconds to wait for the daemon to respond (default 60)
#   XAVI_DOCKERD_ARGS       extra arguments passed to dockerd (default empty)
#
# Output: when it starts a daemon, the last line is that daemon's PID alone.
set -euo pipefail

readonly SOCKET=/var/run/docker.sock
readonly DOCKER_PIDFILE=/var/run/docker.pid
readonly CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid
readonly SYSTEM_CONTAINERD_SOCKET=/run/containerd/containerd.sock
readonly STATE_DIR=${XAVI_STATE_DIR:-/var/tmp/xavi-ci}
readonly LOG_FILE=${STATE_DIR}/dockerd.log
readonly PID_FILE=${STATE_DIR}/dockerd.pid
readonly TIMEOUT=${XAVI_DOCKERD_TIMEOUT:-60}

log() { echo "start-dockerd: $*"; }
fail() { echo "start-dockerd: error: $*" >&2; exit 1; }

engine_responds() {
    docker --host "unix://${SOCKET}" info >/dev/null 2>&1
}

# Succeeds when PID is a live process whose command name is NAME.
process_is() {
    local pid=$1 name=$2 comm
    [[ ${pid} =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/${pid}/comm" 2>/dev/null) || return 1
    [[ ${comm} == "${name}" ]]
}

# Remove FILE when it names no live process called NAME. A pid file left by a
# killed daemon may name a PID that was reused by an unrelated process, and
# dockerd then refuses to start or waits on a containerd that is not there.
remove_stale_pidfile() {
    local file=$1 name=$2 pid
    [[ -e ${file} ]] || return 0
    pid=$(tr -d '[:space:]' 2>/dev/null <"${file}" || true)
    if process_is "${pid}" "${name}"; then
        return 0
    fi
    log "removing stale ${file} (pid '${pid}' is not a running ${name})"
    rm -f "${file}"
}

# dockerd 20.10 uses the system containerd whenever this socket file exists.
# With a socket left by a killed containerd, dockerd 20.10.24 retries the
# connection and never responds, so the file is removed when nothing listens.
remove_stale_containerd_socket() {
    [[ -S ${SYSTEM_CONTAINERD_SOCKET} ]] || return 0
    if ss -xl 2>/dev/null | grep -qF "${SYSTEM_CONTAINERD_SOCKET}"; then
        return 0
    fi
    log "removing stale ${SYSTEM_CONTAINERD_SOCKET} (no process listens on it)"
    rm -f "${SYSTEM_CONTAINERD_SOCKET}"
}

wait_for_engine() {
    local pid=$1 deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if engine_responds; then
            return 0
        fi
        if ! kill -0 "${pid}" 2>/dev/null; then
            echo "start-dockerd: error: dockerd (pid ${pid}) exited during startup; last lines of ${LOG_FILE}:" >&2
            tail -n 30 "${LOG_FILE}" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    echo "start-dockerd: error: dockerd (pid ${pid}) did not respond on ${SOCKET} within ${TIMEOUT} s; last lines of ${LOG_FILE}:" >&2
    tail -n 30 "${LOG_FILE}" >&2 || true
    exit 1
}

main() {
    command -v docker >/dev/null || fail "docker client not found; run scripts/install-deps.sh first"
    command -v dockerd >/dev/null || fail "dockerd not found; run scripts/install-deps.sh first"

    if engine_responds; then
        log "dockerd already responds on ${SOCKET}; nothing to do"
        return 0
    fi
    [[ ${EUID} -eq 0 ]] || fail "must run as root to start dockerd, running as uid ${EUID}"

    # A dockerd that is alive but not responding yet (still starting, or
    # started by someone else a moment ago) is waited for and never replaced.
    local existing
    existing=$(tr -d '[:space:]' 2>/dev/null <"${DOCKER_PIDFILE}" || true)
    if process_is "${existing}" dockerd; then
        log "dockerd pid ${existing} is running but not responding yet; waiting up to ${TIMEOUT} s"
        wait_for_engine "${existing}"
        log "dockerd pid ${existing} responds on ${SOCKET}"
        return 0
    fi

    remove_stale_pidfile "${DOCKER_PIDFILE}" dockerd
    remove_stale_pidfile "${CONTAINERD_PIDFILE}" containerd
    remove_stale_containerd_socket
    if [[ -S ${SOCKET} ]]; then
        rm -f "${SOCKET}"
    fi

    mkdir -p "${STATE_DIR}"
    local started=${SECONDS} pid
    # Word splitting of XAVI_DOCKERD_ARGS is intended.
    # shellcheck disable=SC2086
    setsid dockerd ${XAVI_DOCKERD_ARGS:-} >>"${LOG_FILE}" 2>&1 </dev/null &
    pid=$!
    echo "${pid}" >"${PID_FILE}"
    log "started dockerd pid ${pid}, log ${LOG_FILE}"

    wait_for_engine "${pid}"
    log "dockerd pid ${pid} responds on ${SOCKET} after $((SECONDS - started)) s"
    echo "${pid}"
}

main "$@"
