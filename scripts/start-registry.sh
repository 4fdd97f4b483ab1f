#!/usr/bin/env bash
# Start a local image registry with credentials for Xavi's pull tests:
# Debian's docker-registry (distribution 2.8) on 127.0.0.1:5000, with htpasswd
# (bcrypt) authentication for user `xavi`.
#
# Idempotent: when a registry already responds on the address and accepts the
# credentials, nothing is started. The config file, the htpasswd file, the
# image storage, the log and the pid file live in $XAVI_STATE_DIR/registry.
# Prints the PID it started. Docker treats 127.0.0.0/8 registries as insecure
# (plain HTTP), so `docker login 127.0.0.1:5000` works without TLS.
#
# Usage: start-registry.sh          start (or keep) the registry
#        start-registry.sh --stop   stop the registry whose PID this script
#                                   recorded; any other process is left alone
#
# Environment:
#   XAVI_TEST_REGISTRY_PASSWORD  password of user xavi (default
#                                "xavi-test-only", for local tests only)
#   XAVI_TEST_REGISTRY_ADDR      listen address, must be on 127.0.0.0/8
#                                (default 127.0.0.1:5000)
#   XAVI_STATE_DIR               state folder (default /var/tmp/xavi-ci)
#   XAVI_REGISTRY_TIMEOUT        seconds to wait for the registry (default 30)
set -euo pipefail

readonly USERNAME=xavi
readonly PASSWORD=${XAVI_TEST_REGISTRY_PASSWORD:-xavi-test-only}
readonly ADDR=${XAVI_TEST_REGISTRY_ADDR:-127.0.0.1:5000}
readonly STATE_DIR=${XAVI_STATE_DIR:-/var/tmp/xavi-ci}/registry
readonly CONFIG_FILE=${STATE_DIR}/config.yml
readonly HTPASSWD_FILE=${STATE_DIR}/htpasswd
readonly STORAGE_DIR=${STATE_DIR}/storage
readonly LOG_FILE=${STATE_DIR}/registry.log
readonly PID_FILE=${STATE_DIR}/registry.pid
readonly TIMEOUT=${XAVI_REGISTRY_TIMEOUT:-30}
# Expected /proc/PID/comm of the registry. The kernel keeps at most 15
# characters there, and "docker-registry" has exactly 15.
readonly PROCESS_NAME=docker-registry

log() { echo "start-registry: $*"; }
fail() { echo "start-registry: error: $*" >&2; exit 1; }

# Print the HTTP status of GET /v2/ (000 when nothing responds). Extra
# arguments go to curl.
v2_status() {
    curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 "$@" \
        "http://${ADDR}/v2/" 2>/dev/null || true
}

# The password reaches curl as a config file on stdin, so it never shows in
# the process list.
v2_status_with_credentials() {
    # curl's config syntax: backslash and double quote are escaped inside "...".
    local escaped=${PASSWORD//\\/\\\\}
    escaped=${escaped//\"/\\\"}
    printf 'user = "%s:%s"\n' "${USERNAME}" "${escaped}" | v2_status --config -
}

recorded_pid() {
    local pid
    pid=$(tr -d '[:space:]' 2>/dev/null <"${PID_FILE}" || true)
    if [[ ${pid} =~ ^[0-9]+$ && $(cat "/proc/${pid}/comm" 2>/dev/null || true) == "${PROCESS_NAME}" ]]; then
        echo "${pid}"
    fi
}

stop_registry() {
    local pid
    pid=$(recorded_pid)
    if [[ -z ${pid} ]]; then
        log "no registry started by this script is running (pid file ${PID_FILE})"
        rm -f "${PID_FILE}"
        return 0
    fi
    kill -TERM "${pid}"
    local deadline=$((SECONDS + 10))
    while kill -0 "${pid}" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "registry pid ${pid} did not exit within 10 s of SIGTERM"
        sleep 0.1
    done
    rm -f "${PID_FILE}"
    log "stopped registry pid ${pid}"
}

write_config() {
    mkdir -p "${STORAGE_DIR}"
    chmod 0700 "${STATE_DIR}"
    local http_secret
    http_secret=$(head -c 32 /dev/urandom | base64 | tr -d '\n/+=')
    (
        umask 077
        printf '%s\n' "${PASSWORD}" | htpasswd -nBi "${USERNAME}" >"${HTPASSWD_FILE}.new"
        mv "${HTPASSWD_FILE}.new" "${HTPASSWD_FILE}"
        cat >"${CONFIG_FILE}" <<EOF
# Written by scripts/start-registry.sh; rewritten on every start.
version: 0.1
log:
  level: info
  fields:
    service: xavi-test-registry
storage:
  filesystem:
    rootdirectory: ${STORAGE_DIR}
  delete:
    enabled: true
http:
  addr: ${ADDR}
  secret: ${http_secret}
auth:
  htpasswd:
    realm: xavi-test-registry
    path: ${HTPASSWD_FILE}
EOF
    )
}

start_registry() {
    [[ ${ADDR} =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+$ ]] ||
        fail "XAVI_TEST_REGISTRY_ADDR=${ADDR} is invalid; expected an address on 127.0.0.0/8 with a port, such as 127.0.0.1:5000"
    command -v docker-registry >/dev/null || fail "docker-registry not found; run scripts/install-deps.sh first"
    command -v htpasswd >/dev/null || fail "htpasswd not found; run scripts/install-deps.sh first (package apache2-utils)"
    command -v curl >/dev/null || fail "curl not found; run scripts/install-deps.sh first"

    local status pid
    status=$(v2_status)
    if [[ ${status} != 000 ]]; then
        if [[ $(v2_status_with_credentials) == 200 ]]; then
            log "a registry already responds on ${ADDR} and accepts user ${USERNAME}; nothing to do"
            return 0
        fi
        pid=$(recorded_pid)
        [[ -n ${pid} ]] ||
            fail "${ADDR} is in use (GET /v2/ returned HTTP ${status}) by a process this script did not start, and it rejects user ${USERNAME} with XAVI_TEST_REGISTRY_PASSWORD; stop it or set XAVI_TEST_REGISTRY_ADDR"
        log "registry pid ${pid} rejects the current password; restarting it"
        stop_registry
    fi

    write_config
    setsid docker-registry serve "${CONFIG_FILE}" >>"${LOG_FILE}" 2>&1 </dev/null &
    pid=$!
    echo "${pid}" >"${PID_FILE}"
    log "started registry pid ${pid} on ${ADDR}, log ${LOG_FILE}"

    local deadline=$((SECONDS + TIMEOUT))
    while [[ $(v2_status) != 401 ]]; do
        if ! kill -0 "${pid}" 2>/dev/null; then
            echo "start-registry: error: registry pid ${pid} exited during startup; last lines of ${LOG_FILE}:" >&2
            tail -n 20 "${LOG_FILE}" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "start-registry: error: registry pid ${pid} did not respond on ${ADDR} within ${TIMEOUT} s; last lines of ${LOG_FILE}:" >&2
            tail -n 20 "${LOG_FILE}" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    [[ $(v2_status_with_credentials) == 200 ]] ||
        fail "registry pid ${pid} responds but rejects user ${USERNAME}; see ${LOG_FILE}"
    log "registry pid ${pid} responds on ${ADDR} (user ${USERNAME})"
    echo "${pid}"
}

main() {
    case ${1:-} in
        "") start_registry ;;
        --stop) stop_registry ;;
        -h | --help) sed -n '2,/^set -euo/p' "$(readlink -f "${BASH_SOURCE[0]}")" | sed '$d; s/^# \{0,1\}//' ;;
        *) fail "unknown argument '$1'; expected no argument, --stop or --help" ;;
    esac
}

main "$@"
