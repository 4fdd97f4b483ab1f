#!/bin/sh
# Stand-in for Xavi's app and backup-bot containers (busybox sh).
#
# Every XAVI_STANDIN_INTERVAL seconds, opens a TCP connection to Postgres and
# to Valkey and prints one line:
#   <role>: postgres=ok|unreachable valkey=ok|unreachable
# A service whose host variable is empty counts as unreachable. Password
# variables are never read or printed. SIGTERM or SIGINT ends it with exit
# status 0 within a fraction of a second.
#
# Environment:
#   XAVI_STANDIN_ROLE      prefix of each line (set by the image: app or backupbot)
#   XAVI_STANDIN_INTERVAL  seconds between checks (default 5)
#   POSTGRES_HOST, POSTGRES_PORT (default 5432)
#   VALKEY_HOST, VALKEY_PORT (default 6379)
set -u

role=${XAVI_STANDIN_ROLE:-app}
interval=${XAVI_STANDIN_INTERVAL:-5}
child=""

stop() {
    if [ -n "${child}" ]; then
        kill "${child}" 2>/dev/null
    fi
    echo "${role}: stopping"
    exit 0
}
trap stop TERM INT

# Print ok when HOST:PORT accepts a TCP connection within 2 s. busybox nc has
# no -z, so -e runs `true` on the connected socket, which closes it at once.
probe() {
    if [ -n "$1" ] && nc -w 2 "$1" "$2" -e true </dev/null >/dev/null 2>&1; then
        echo ok
    else
        echo unreachable
    fi
}

report() {
    echo "${role}: postgres=$(probe "${POSTGRES_HOST:-}" "${POSTGRES_PORT:-5432}") valkey=$(probe "${VALKEY_HOST:-}" "${VALKEY_PORT:-6379}")"
}

echo "${role}: started, checking every ${interval} s"
# Each step runs in the background and the shell waits for it, because a
# trapped signal interrupts `wait` at once but not a foreground command.
while :; do
    report &
    child=$!
    wait "${child}"
    sleep "${interval}" &
    child=$!
    wait "${child}"
done
