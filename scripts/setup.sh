#!/usr/bin/env bash
# Installs what building and testing the suite needs on a fresh Debian machine, and nothing
# when it is all there already. Needs root (network namespaces, apt-get).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root: the tests create network namespaces" >&2
    exit 1
fi

# command -> Debian package
declare -A needed=(
    [ip]=iproute2
    [nft]=nftables
    [nsenter]=util-linux
    [ping]=iputils-ping
    [cc]=gcc
    [bc]=bc
    [unshare]=util-linux
    [shuf]=coreutils
    [conntrack]=conntrack
    [python3]=python3
    [curl]=curl
    [file]=file
    [setpriv]=util-linux
)
missing=()
for cmd in "${!needed[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
# The C library headers and startup files the linker needs (a Recommends of gcc only).
dpkg -s libc6-dev >/dev/null 2>&1 || missing+=(libc6-dev)
# The Go reference plugins, for the side-by-side tests and benchmarks.
[ -x /usr/lib/cni/host-local ] || missing+=(containernetworking-plugins)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust (rustup, stable >= 1.89) first" >&2
    exit 1
fi
