#!/usr/bin/env bash
# Install the Debian packages that Xavi's development, tests and CI need.
#
# Idempotent: each package is checked with dpkg-query first, and apt-get
# (including `apt-get update`) runs only when at least one is missing, so a
# second run takes about a second. Runs non-interactively; needs root.
#
# Environment:
#   XAVI_EXTRA_PACKAGES  space-separated extra Debian packages to install too
#                        (optional, empty by default)
set -euo pipefail

readonly PACKAGES=(
    docker.io                              # Docker Engine 20.10 (dockerd, containerd, runc)
    iptables                               # dockerd's NAT and the multi-host test network
    debootstrap                            # root filesystem for the locally built images
    golang-go                              # builds the Go memberlist test peer
    golang-github-hashicorp-memberlist-dev # the reference gossip library (GOPATH source)
    docker-registry                        # local registry with credentials for pull tests
    apache2-utils                          # htpasswd for the registry's bcrypt users
    postgresql-client                      # psql and pg_isready against the Postgres image
    redis-tools                            # redis-cli against the Valkey image
    serf                                   # a second real memberlist implementation
    docker-compose
    busybox-static                         # the app and backup-bot stand-in images
    iproute2                               # network namespaces for simulated hosts
    ca-certificates
    curl                                   # start-registry.sh's readiness check
)

main() {
    if [[ ${EUID} -ne 0 ]]; then
        echo "install-deps: must run as root (apt-get install), running as uid ${EUID}" >&2
        exit 1
    fi

    local wanted=("${PACKAGES[@]}")
    if [[ -n ${XAVI_EXTRA_PACKAGES:-} ]]; then
        # Word splitting is intended: the variable is a space-separated list.
        # shellcheck disable=SC2206
        wanted+=(${XAVI_EXTRA_PACKAGES})
    fi

    local missing=() package status
    for package in "${wanted[@]}"; do
        status=$(dpkg-query --show --showformat='${db:Status-Status}' "${package}" 2>/dev/null || true)
        if [[ ${status} != "installed" ]]; then
            missing+=("${package}")
        fi
    done

    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "install-deps: all ${#wanted[@]} packages already installed"
        return 0
    fi

    echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    echo "install-deps: done"
}

main "$@"
