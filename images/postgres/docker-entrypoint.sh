#!/bin/bash
# Entrypoint of xavi-local/postgres:15, compatible with the official postgres
# image for the variables below.
#
# When the command is `postgres` (the default, or any arguments starting with
# `-`), it initialises a cluster in $PGDATA if that folder contains none. Then
# it execs the server as user postgres (uid 999), so the server is PID 1 and
# receives the stop signal (SIGINT, fast shutdown). Any other command runs
# unchanged.
#
# Environment:
#   POSTGRES_PASSWORD          superuser password; required to initialise a
#                              cluster unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_PASSWORD_FILE     file whose content is the password (one trailing
#                              newline is ignored); exclusive with the above.
#                              Read before privileges are dropped, so a file
#                              readable only by root works.
#   POSTGRES_USER              superuser name (default postgres)
#   POSTGRES_DB                database created at initialisation
#                              (default: the value of POSTGRES_USER)
#   PGDATA                     cluster folder (default /var/lib/postgresql/data)
#   POSTGRES_INITDB_ARGS       extra initdb arguments, split on spaces
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP clients (default scram-sha-256)
#
# Scripts in /docker-entrypoint-initdb.d (*.sh run, *.sql fed to psql) run once,
# after initialisation, against a server that listens only on its Unix socket.
# Password values are never printed, and the server process does not inherit
# POSTGRES_PASSWORD.
set -Eeuo pipefail

log() { echo "postgres-entrypoint: $*"; }
fail() { echo "postgres-entrypoint: error: $*" >&2; exit 1; }

# Set VAR from VAR or from the file named by VAR_FILE, then unset VAR_FILE.
file_env() {
    local var=$1 file_var="${1}_FILE" default=${2:-} value
    value=${default}
    if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
        fail "both ${var} and ${file_var} are set; set only one"
    fi
    if [[ -n ${!var:-} ]]; then
        value=${!var}
    elif [[ -n ${!file_var:-} ]]; then
        [[ -r ${!file_var} ]] || fail "${file_var}=${!file_var}: file not found or not readable"
        value=$(<"${!file_var}")
    fi
    export "${var}=${value}"
    unset "${file_var}"
}

wants_help() {
    local arg
    for arg in "$@"; do
        case ${arg} in
            -'?' | --help | --describe-config | -V | --version) return 0 ;;
        esac
    done
    return 1
}

setup_env() {
    export PGDATA=${PGDATA:-/var/lib/postgresql/data}
    file_env POSTGRES_PASSWORD
    export POSTGRES_USER=${POSTGRES_USER:-postgres}
    export POSTGRES_DB=${POSTGRES_DB:-${POSTGRES_USER}}
    export POSTGRES_HOST_AUTH_METHOD=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
}

# As root: create the folders, give them to postgres, then run this script
# again as postgres with the resolved environment.
drop_privileges() {
    mkdir -p "${PGDATA}" /var/run/postgresql
    chmod 0700 "${PGDATA}"
    find "${PGDATA}" \! -user postgres -exec chown postgres:postgres '{}' +
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
}

init_cluster() {
    if [[ -z ${POSTGRES_PASSWORD} && ${POSTGRES_HOST_AUTH_METHOD} != trust ]]; then
        fail "PGDATA=${PGDATA} contains no cluster and no superuser password is set; set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (or POSTGRES_HOST_AUTH_METHOD=trust, never outside tests)"
    fi
    log "initialising a cluster in ${PGDATA} for user ${POSTGRES_USER}"

    # Word splitting of POSTGRES_INITDB_ARGS is intended, as in the official image.
    # shellcheck disable=SC2086
    initdb --username="${POSTGRES_USER}" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD}") \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD}" >>"${PGDATA}/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >>"${PGDATA}/postgresql.conf"

    # Temporary server on the Unix socket only, for the database and scripts.
    pg_ctl --pgdata="${PGDATA}" --options="-c listen_addresses=''" --wait --silent start
    local psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "${POSTGRES_USER}")
    if [[ ${POSTGRES_DB} != postgres ]]; then
        # psql quotes the name (:"db"); variables are not expanded in --command.
        "${psql[@]}" --dbname postgres --set db="${POSTGRES_DB}" <<<'CREATE DATABASE :"db";' >/dev/null
    fi

    local script
    for script in /docker-entrypoint-initdb.d/*; do
        case ${script} in
            *.sh) log "running ${script}"; bash "${script}" ;;
            *.sql) log "running ${script}"; "${psql[@]}" --dbname "${POSTGRES_DB}" --file "${script}" >/dev/null ;;
            *) [[ -e ${script} ]] && log "ignoring ${script} (not .sh or .sql)" ;;
        esac
    done

    pg_ctl --pgdata="${PGDATA}" --mode=fast --wait --silent stop
    log "initialisation complete"
}

main() {
    if [[ $# -eq 0 || ${1:0:1} == - ]]; then
        set -- postgres "$@"
    fi
    if [[ $1 != postgres ]] || wants_help "$@"; then
        exec "$@"
    fi

    setup_env
    if [[ $(id -u) -eq 0 ]]; then
        drop_privileges "$@"
    fi
    # TODO(postgres-image): `docker run --user` with a uid other than 0 or 999
    # fails in initdb, because that uid has no passwd entry and this image has
    # no nss_wrapper as the official one does.

    # TODO(postgres-image): an initialisation that fails after initdb leaves a
    # cluster that the next start treats as complete, because PG_VERSION is all
    # that is checked, as in the official image.
    if [[ ! -s ${PGDATA}/PG_VERSION ]]; then
        init_cluster
    else
        log "PGDATA=${PGDATA} contains a cluster; skipping initialisation"
    fi

    unset POSTGRES_PASSWORD
    exec "$@"
}

main "$@"
