#!/bin/bash
# Prepare the shared Debian bookworm root filesystem. Runs inside the chroot
# right after `debootstrap --variant=minbase`; scripts/build-images.sh caches
# the result and every Debian-based image starts from a copy of it.
#
# Environment (set by build-images.sh):
#   XAVI_MIRROR           Debian mirror URI for bookworm, bookworm-updates and
#                         bookworm-backports
#   XAVI_SECURITY_MIRROR  mirror URI for bookworm-security (empty: not added)
set -euo pipefail

: "${XAVI_MIRROR:?XAVI_MIRROR must be set to the Debian mirror URI}"

rm -f /etc/apt/sources.list
{
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates bookworm-backports\n' "${XAVI_MIRROR}"
    printf 'Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [[ -n ${XAVI_SECURITY_MIRROR:-} ]]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\n' "${XAVI_SECURITY_MIRROR}"
        printf 'Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} >/etc/apt/sources.list.d/debian.sources

# Build-time apt settings; build-images.sh deletes this file from every image.
# The configured mirror may serve a dated snapshot whose Release files are past
# their Valid-Until date, which apt would otherwise reject.
cat >/etc/apt/apt.conf.d/90xavi-build <<'CONF'
Acquire::Check-Valid-Until "false";
Acquire::Languages "none";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CONF

# Keep documentation out of the images, except the copyright files.
cat >/etc/dpkg/dpkg.cfg.d/90xavi-nodoc <<'CONF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
CONF

# Package scripts must not start services inside the chroot or the image
# (101 = action forbidden, see invoke-rc.d(8)).
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d

apt-get update -qq
apt-get upgrade -y -qq
apt-get clean
