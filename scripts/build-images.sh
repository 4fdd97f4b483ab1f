#!/usr/bin/env bash
# Build the images that Xavi's integration tests run, offline, from Debian
# packages (see images/README.md):
#   xavi-local/postgres:15  xavi-local/valkey:8
#   xavi-local/app:latest   xavi-local/backupbot:latest
#
# Builds are cached by content. Each image gets the label
# org.tripleclabs.xavi.recipe-hash, a SHA-256 over its folder under images/,
# this script and its base (the rootfs key, or the busybox binary). An image
# whose tag exists with the current hash is not rebuilt, so a second run takes
# seconds. The Debian-based images start from one shared
# `debootstrap --variant=minbase bookworm` tree, cached as a tar file under
# $XAVI_IMAGES_CACHE_DIR and keyed by images/rootfs/, the debootstrap arguments
# and the mirrors. The only network traffic is apt's, to the Debian mirror that
# the host's apt uses. Needs root, a running dockerd (scripts/start-dockerd.sh)
# and the packages from scripts/install-deps.sh.
#
# Usage: build-images.sh [--force] [postgres|valkey|app|backupbot ...]
#   no names builds all four; --force rebuilds even when the hash matches
#   (the cached rootfs is still reused).
#
# NOTE: package versions come from the apt lists saved in the cached rootfs,
# so newer Debian packages (security updates) reach the images only after
# deleting $XAVI_IMAGES_CACHE_DIR/rootfs-*.tar and running with --force.
#
# Environment:
#   XAVI_IMAGES_CACHE_DIR  rootfs cache, work folders and build logs
#                          (default /var/cache/xavi-images)
#   XAVI_DEBIAN_MIRROR     Debian mirror URI (default: the bookworm entry of
#                          /etc/apt/sources.list.d/debian.sources, else of
#                          /etc/apt/sources.list)
#   XAVI_DEBIAN_SECURITY_MIRROR  bookworm-security mirror URI (default: found
#                          the same way; set it empty, or configure none, to
#                          leave bookworm-security out)
set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
REPO_ROOT=$(dirname "$(dirname "${SCRIPT_PATH}")")
readonly SCRIPT_PATH REPO_ROOT
readonly IMAGES_DIR=${REPO_ROOT}/images
readonly CACHE_DIR=${XAVI_IMAGES_CACHE_DIR:-/var/cache/xavi-images}
readonly LOG_DIR=${CACHE_DIR}/logs
readonly HASH_LABEL=org.tripleclabs.xavi.recipe-hash
readonly SUITE=bookworm
readonly DEBOOTSTRAP_ARGS="--variant=minbase ${SUITE}"
readonly CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly ALL_IMAGES=(postgres valkey app backupbot)

# The legacy builder works without buildx and without network access. Newer
# docker clients reach BuildKit only through the buildx plugin, which Debian's
# docker.io 20.10 does not ship.
export DOCKER_BUILDKIT=0

log() { echo "build-images: $*"; }
fail() { echo "build-images: error: $*" >&2; exit 1; }

FORCE=0
WORK_DIR=""
MOUNTED_PROC=""

cleanup() {
    if [[ -n ${MOUNTED_PROC} ]]; then
        umount "${MOUNTED_PROC}" 2>/dev/null || umount -l "${MOUNTED_PROC}" 2>/dev/null || true
    fi
    if [[ -n ${WORK_DIR} && -d ${WORK_DIR} ]]; then
        rm -rf --one-file-system "${WORK_DIR}"
    fi
}
trap cleanup EXIT

# Print the first URI of the apt source whose suites include $1, from the
# deb822 file and then from one-line sources.list files.
configured_mirror() {
    local suite=$1 uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk -v suite="${suite}" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; found = 0
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); split(line, u, /[ \t]+/); uris = u[1] }
                    if (line ~ /^Suites:/) {
                        sub(/^Suites:[ \t]*/, "", line); n = split(line, s, /[ \t]+/)
                        for (j = 1; j <= n; j++) if (s[j] == suite) found = 1
                    }
                }
                if (found && uris != "") { print uris; exit }
            }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z ${uri} ]]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v suite="${suite}" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }')
    fi
    echo "${uri}"
}

# SHA-256 over strings (-s VALUE) and files or folders: relative path, mode
# and content of every file, in sorted order.
content_hash() {
    local item file
    {
        while [[ $# -gt 0 ]]; do
            if [[ $1 == -s ]]; then
                printf 'string\0%s\0' "$2"
                shift 2
                continue
            fi
            item=$1
            shift
            [[ -e ${item} ]] || fail "recipe input not found: ${item}"
            while IFS= read -r -d '' file; do
                printf 'file\0%s\0%s\0' "${file#"${REPO_ROOT}"/}" "$(stat -c %a "${file}")"
                sha256sum <"${file}"
            done < <(find "${item}" -type f -print0 | sort -z)
        done
    } | sha256sum | cut -c1-64
}

image_hash_label() {
    docker image inspect --format "{{ index .Config.Labels \"${HASH_LABEL}\" }}" "$1" 2>/dev/null || true
}

# Run SCRIPT inside ROOTFS with a clean environment, appending its output to
# LOGFILE. Extra NAME=VALUE arguments are added to that environment.
run_in_chroot() {
    local rootfs=$1 script=$2 logfile=$3
    shift 3
    mkdir -p "${rootfs}/tmp/xavi-build"
    cp "${script}" "${rootfs}/tmp/xavi-build/"
    cp /etc/resolv.conf "${rootfs}/etc/resolv.conf"
    mount -t proc proc "${rootfs}/proc" || fail "mounting /proc in ${rootfs} failed"
    MOUNTED_PROC=${rootfs}/proc
    # Callers test the status with ||, which turns off set -e in here, so the
    # status is kept explicitly.
    local status=0
    env -i PATH="${CHROOT_PATH}" HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@" \
        chroot "${rootfs}" /bin/bash "/tmp/xavi-build/$(basename "${script}")" >>"${logfile}" 2>&1 ||
        status=$?
    umount "${rootfs}/proc" || fail "unmounting ${rootfs}/proc failed"
    MOUNTED_PROC=""
    rm -rf "${rootfs}/tmp/xavi-build"
    return "${status}"
}

# Print MESSAGE and the last lines of LOGFILE, then exit with status 1.
fail_with_log() {
    local message=$1 logfile=$2
    echo "build-images: error: ${message}; last lines of ${logfile}:" >&2
    tail -n 40 "${logfile}" >&2 || true
    exit 1
}

ROOTFS_TAR=""
ROOTFS_KEY=""

# Create (or reuse) the shared bookworm tree as ${CACHE_DIR}/rootfs-KEY.tar.
ensure_rootfs() {
    [[ -n ${ROOTFS_TAR} ]] && return 0
    local mirror security_mirror
    mirror=${XAVI_DEBIAN_MIRROR:-$(configured_mirror "${SUITE}")}
    security_mirror=${XAVI_DEBIAN_SECURITY_MIRROR-$(configured_mirror "${SUITE}-security")}
    [[ -n ${mirror} ]] || fail "no apt source for ${SUITE} found in /etc/apt; set XAVI_DEBIAN_MIRROR"

    ROOTFS_KEY=$(content_hash "${IMAGES_DIR}/rootfs" -s "${DEBOOTSTRAP_ARGS}" -s "${mirror}" -s "${security_mirror}")
    ROOTFS_TAR=${CACHE_DIR}/rootfs-${ROOTFS_KEY:0:16}.tar
    if [[ -s ${ROOTFS_TAR} ]]; then
        return 0
    fi

    local started=${SECONDS} logfile=${LOG_DIR}/rootfs.log rootfs
    log "creating the ${SUITE} rootfs from ${mirror} (about a minute), log ${logfile}"
    : >"${logfile}"
    WORK_DIR=$(mktemp -d "${CACHE_DIR}/work.XXXXXX")
    rootfs=${WORK_DIR}/rootfs
    # Word splitting of DEBOOTSTRAP_ARGS is intended.
    # shellcheck disable=SC2086
    debootstrap ${DEBOOTSTRAP_ARGS} "${rootfs}" "${mirror}" >>"${logfile}" 2>&1 ||
        fail_with_log "debootstrap failed" "${logfile}"
    run_in_chroot "${rootfs}" "${IMAGES_DIR}/rootfs/setup-in-chroot.sh" "${logfile}" \
        XAVI_MIRROR="${mirror}" XAVI_SECURITY_MIRROR="${security_mirror}" ||
        fail_with_log "rootfs setup failed" "${logfile}"
    tar --numeric-owner -C "${rootfs}" -cf "${ROOTFS_TAR}.partial" . ||
        fail "writing ${ROOTFS_TAR} failed"
    mv "${ROOTFS_TAR}.partial" "${ROOTFS_TAR}"
    rm -rf --one-file-system "${WORK_DIR}"
    WORK_DIR=""

    local old
    for old in "${CACHE_DIR}"/rootfs-*.tar; do
        [[ ${old} == "${ROOTFS_TAR}" ]] || rm -f "${old}"
    done
    log "rootfs ready in $((SECONDS - started)) s ($(du -h "${ROOTFS_TAR}" | cut -f1))"
}

# Delete what images do not need from a finished tree.
trim_rootfs() {
    local rootfs=${1:?}
    rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/* \
        "${rootfs}"/var/cache/debconf/*-old "${rootfs}"/var/lib/dpkg/*-old \
        "${rootfs}"/var/log/* "${rootfs}"/tmp/* "${rootfs}"/var/tmp/* \
        "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/* "${rootfs}"/usr/share/locale/* \
        "${rootfs}"/etc/apt/apt.conf.d/90xavi-build "${rootfs}"/etc/resolv.conf "${rootfs}"/etc/hostname
    find "${rootfs}/usr/share/doc" -mindepth 1 \( -type f -o -type l \) ! -name copyright -delete
    find "${rootfs}/usr/share/doc" -mindepth 1 -type d -empty -delete
}

# Delete OLD_ID, the image that TAG named before this build, unless a
# container still uses it.
finish_image() {
    local tag=$1 old_id=$2 new_id
    new_id=$(docker image inspect --format '{{.Id}}' "${tag}")
    if [[ -n ${old_id} && ${old_id} != "${new_id}" ]]; then
        docker image rm "${old_id}" >/dev/null 2>&1 ||
            log "kept the previous ${tag} image ${old_id:7:12} (a container still uses it)"
    fi
}

# build_debian_image NAME TAG: postgres or valkey, from the shared rootfs.
build_debian_image() {
    local name=$1 tag="xavi-local/$1:$2" folder=${IMAGES_DIR}/$1 hash
    ensure_rootfs
    hash=$(content_hash "${folder}" "${SCRIPT_PATH}" -s "${ROOTFS_KEY}")
    if [[ ${FORCE} -eq 0 && $(image_hash_label "${tag}") == "${hash}" ]]; then
        log "${tag}: cached (recipe ${hash:0:12})"
        return 0
    fi

    local started=${SECONDS} logfile=${LOG_DIR}/${name}.log rootfs base old_id
    : >"${logfile}"
    old_id=$(docker image inspect --format '{{.Id}}' "${tag}" 2>/dev/null || true)
    WORK_DIR=$(mktemp -d "${CACHE_DIR}/work.XXXXXX")
    rootfs=${WORK_DIR}/rootfs
    mkdir -p "${rootfs}"
    tar --numeric-owner -xpf "${ROOTFS_TAR}" -C "${rootfs}"
    run_in_chroot "${rootfs}" "${folder}/install-in-chroot.sh" "${logfile}" ||
        fail_with_log "installing packages for ${tag} failed" "${logfile}"
    trim_rootfs "${rootfs}"

    base=xavi-local/${name}-base:${hash:0:12}
    tar --numeric-owner -C "${rootfs}" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -cf - . |
        docker import - "${base}" >>"${logfile}" 2>&1 ||
        fail_with_log "docker import of ${base} failed" "${logfile}"
    rm -rf --one-file-system "${WORK_DIR}"
    WORK_DIR=""

    docker build --build-arg "BASE=${base}" --label "${HASH_LABEL}=${hash}" --tag "${tag}" \
        "${folder}" >>"${logfile}" 2>&1 ||
        fail_with_log "docker build of ${tag} failed" "${logfile}"
    docker image rm "${base}" >/dev/null
    finish_image "${tag}" "${old_id}"
    log "${tag}: built in $((SECONDS - started)) s, $(image_size "${tag}") (recipe ${hash:0:12})"
}

# build_standin_image ROLE: app or backupbot, FROM scratch with busybox-static.
build_standin_image() {
    local role=$1 tag="xavi-local/$1:latest" folder=${IMAGES_DIR}/standin busybox hash
    busybox=/bin/busybox
    [[ -x ${busybox} ]] || fail "${busybox} not found; run scripts/install-deps.sh (package busybox-static)"
    # ldd fails on a static executable; a dynamic one cannot run FROM scratch.
    if ldd "${busybox}" >/dev/null 2>&1; then
        fail "${busybox} is dynamically linked; install the busybox-static package"
    fi

    hash=$(content_hash "${folder}" "${SCRIPT_PATH}" "${busybox}" -s "role=${role}")
    if [[ ${FORCE} -eq 0 && $(image_hash_label "${tag}") == "${hash}" ]]; then
        log "${tag}: cached (recipe ${hash:0:12})"
        return 0
    fi

    local started=${SECONDS} logfile=${LOG_DIR}/${role}.log context old_id
    : >"${logfile}"
    old_id=$(docker image inspect --format '{{.Id}}' "${tag}" 2>/dev/null || true)
    WORK_DIR=$(mktemp -d "${CACHE_DIR}/work.XXXXXX")
    context=${WORK_DIR}/context
    cp -a "${folder}" "${context}"
    cp "${busybox}" "${context}/busybox"
    docker build --build-arg "ROLE=${role}" --label "${HASH_LABEL}=${hash}" --tag "${tag}" \
        "${context}" >>"${logfile}" 2>&1 ||
        fail_with_log "docker build of ${tag} failed" "${logfile}"
    rm -rf "${WORK_DIR}"
    WORK_DIR=""
    finish_image "${tag}" "${old_id}"
    log "${tag}: built in $((SECONDS - started)) s, $(image_size "${tag}") (recipe ${hash:0:12})"
}

image_size() {
    local bytes
    bytes=$(docker image inspect --format '{{.Size}}' "$1")
    echo "$((bytes / 1000000)) MB"
}

main() {
    local names=() name
    while [[ $# -gt 0 ]]; do
        case $1 in
            --force) FORCE=1 ;;
            -h | --help) sed -n '2,/^set -euo/p' "${SCRIPT_PATH}" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
            postgres | valkey | app | backupbot) names+=("$1") ;;
            *) fail "unknown argument '$1'; expected --force or image names: ${ALL_IMAGES[*]}" ;;
        esac
        shift
    done
    [[ ${#names[@]} -gt 0 ]] || names=("${ALL_IMAGES[@]}")

    [[ ${EUID} -eq 0 ]] || fail "must run as root (debootstrap and chroot), running as uid ${EUID}"
    local tool
    for tool in docker debootstrap chroot; do
        command -v "${tool}" >/dev/null || fail "${tool} not found; run scripts/install-deps.sh first"
    done
    docker info >/dev/null 2>&1 || fail "the Docker engine does not respond; run scripts/start-dockerd.sh first"

    mkdir -p "${CACHE_DIR}" "${LOG_DIR}"
    # One build at a time per cache folder, because parallel runs would share
    # the rootfs tar file and the logs.
    exec 9>"${CACHE_DIR}/.lock"
    flock 9

    local started=${SECONDS}
    for name in "${names[@]}"; do
        case ${name} in
            postgres) build_debian_image postgres 15 ;;
            valkey) build_debian_image valkey 8 ;;
            app | backupbot) build_standin_image "${name}" ;;
        esac
    done
    log "done in $((SECONDS - started)) s"
}

main "$@"
