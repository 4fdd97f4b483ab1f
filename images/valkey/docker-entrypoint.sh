#!/bin/bash
# Entrypoint of xavi-local/valkey:8, compatible with the official valkey image
# for the ways Xavi starts it.
#
# Arguments that start with `-`, or whose first one is a file (a config file
# such as /run/secrets/valkey.conf with a `requirepass` line), are passed to
# valkey-server. Started as root, it gives /data to user valkey (uid 999) and
# execs valkey-server as that user, so the server is PID 1 and gets SIGTERM.
# A config file that user cannot read (for example a root-owned 0600 secret)
# is copied to /run/valkey/ with owner valkey and mode 0600, and the server
# reads the copy; CONFIG REWRITE then writes to the copy, not the original.
# Any other command runs unchanged. No environment variables are read.
set -Eeuo pipefail

readonly PRIVATE_CONFIG_DIR=/run/valkey

as_valkey() {
    setpriv --reuid=valkey --regid=valkey --init-groups "$@"
}

main() {
    if [[ $# -eq 0 || ${1:0:1} == - || -f ${1} ]]; then
        set -- valkey-server "$@"
    fi
    if [[ $1 != valkey-server || $(id -u) -ne 0 ]]; then
        exec "$@"
    fi

    find /data \! -user valkey -exec chown valkey:valkey '{}' +

    if [[ -n ${2:-} && -f ${2} ]] && ! as_valkey test -r "$2"; then
        local copy
        copy="${PRIVATE_CONFIG_DIR}/$(basename "$2")"
        mkdir -p "${PRIVATE_CONFIG_DIR}"
        chown valkey:valkey "${PRIVATE_CONFIG_DIR}"
        chmod 0700 "${PRIVATE_CONFIG_DIR}"
        install -m 0600 -o valkey -g valkey "$2" "${copy}"
        echo "valkey-entrypoint: $2 is not readable by user valkey; using a private copy at ${copy}"
        set -- "$1" "${copy}" "${@:3}"
    fi

    # Files the server creates (RDB, AOF) stay private, as in the official image.
    if [[ $(umask) == 0022 ]]; then
        umask 0077
    fi
    exec setpriv --reuid=valkey --regid=valkey --init-groups "$@"
}

main "$@"
