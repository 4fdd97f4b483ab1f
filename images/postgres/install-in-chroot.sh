#!/bin/bash
# Install PostgreSQL 15 into a copy of the shared bookworm root filesystem.
# Runs inside the chroot (see scripts/build-images.sh).
set -euo pipefail

# uid/gid 999 match the official postgres image, so data folders created by
# one image can be used by the other. Created before the package, whose
# maintainer script then reuses this account.
groupadd --system --gid 999 postgres
useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql \
    --shell /bin/bash postgres
mkdir -p /var/lib/postgresql
chown postgres:postgres /var/lib/postgresql

# The entrypoint creates the cluster in $PGDATA; the package must not create
# Debian's /etc/postgresql/15/main cluster.
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/90xavi.conf

apt-get install -y -qq postgresql-15 postgresql-client-15

# Drop the JIT: postgresql-15 depends on libllvm14 only for llvmjit.so. That
# library and its dependency libz3-4 take about 130 MB installed (bookworm's
# Installed-Size: 107 MB and 23 MB). Without llvmjit.so the server runs every
# query without JIT, and jit = on has no effect.
rm -rf /usr/lib/postgresql/15/lib/llvmjit.so /usr/lib/postgresql/15/lib/llvmjit_types.bc \
    /usr/lib/postgresql/15/lib/bitcode
for package in libllvm14 libz3-4; do
    if dpkg-query --show --showformat='${db:Status-Status}' "${package}" 2>/dev/null | grep -qx installed; then
        dpkg --purge --force-depends "${package}"
    fi
done

# The server and the tools must still find all their shared libraries.
missing=$(ldd /usr/lib/postgresql/15/bin/* 2>/dev/null | grep 'not found' || true)
if [[ -n ${missing} ]]; then
    echo "install-in-chroot: missing shared libraries after removing the JIT:" >&2
    echo "${missing}" >&2
    exit 1
fi

# Unix socket folder: world-writable with the sticky and setgid bits, as in the
# official image, so clients running as other users can connect.
mkdir -p /var/run/postgresql
chown postgres:postgres /var/run/postgresql
chmod 3777 /var/run/postgresql

mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d
chown postgres:postgres /var/lib/postgresql/data
chmod 0700 /var/lib/postgresql/data
