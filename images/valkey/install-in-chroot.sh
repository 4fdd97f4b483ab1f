#!/bin/bash
# Install Valkey 8 from bookworm-backports into a copy of the shared bookworm
# root filesystem. Runs inside the chroot (see scripts/build-images.sh).
set -euo pipefail

# uid/gid 999 as in the official valkey image. Created before the package,
# whose maintainer script then reuses this account.
groupadd --system --gid 999 valkey
useradd --system --uid 999 --gid valkey --home-dir /var/lib/valkey \
    --shell /usr/sbin/nologin valkey

apt-get install -y -qq -t bookworm-backports valkey-server valkey-tools

version=$(valkey-server --version)
case ${version} in
    *v=8.*) echo "install-in-chroot: ${version}" ;;
    *) echo "install-in-chroot: expected Valkey 8 from bookworm-backports, got: ${version}" >&2; exit 1 ;;
esac

mkdir -p /data
chown valkey:valkey /data
