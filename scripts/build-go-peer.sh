#!/usr/bin/env bash
# Build the Go memberlist test peer (tests/interop/peer) offline, in GOPATH
# mode against Debian's packaged sources (golang-github-hashicorp-memberlist-dev
# 0.2.2). The binary goes to .cache/go-peer/xavi-go-peer and is rebuilt only
# when the peer's source hash changes. Prints the binary's path.
#
# Needs: apt-get install golang-go golang-github-hashicorp-memberlist-dev
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/tests/interop/peer"
cache="$repo/.cache/go-peer"
bin="$cache/xavi-go-peer"
stamp="$cache/source.sha256"

if ! command -v go >/dev/null 2>&1; then
    echo "build-go-peer: 'go' not found; install golang-go and golang-github-hashicorp-memberlist-dev" >&2
    exit 1
fi
if [ ! -d /usr/share/gocode/src/github.com/hashicorp/memberlist ]; then
    echo "build-go-peer: memberlist sources not found; install golang-github-hashicorp-memberlist-dev" >&2
    exit 1
fi

hash="$( (cat "$src"/*.go; go version) | sha256sum | cut -d' ' -f1)"
if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$cache/gopath/src/xavi-go-peer" "$cache/gocache"
# GOPATH mode needs the package inside a GOPATH; a copy keeps the tree clean.
rm -f "$cache/gopath/src/xavi-go-peer"/*.go
cp "$src"/*.go "$cache/gopath/src/xavi-go-peer/"
(
    cd "$cache/gopath/src/xavi-go-peer"
    GO111MODULE=off GOFLAGS= GOPATH="/usr/share/gocode:$cache/gopath" \
        GOCACHE="$cache/gocache" go build -o "$bin.tmp" .
)
mv "$bin.tmp" "$bin"
echo "$hash" > "$stamp"
echo "$bin"
