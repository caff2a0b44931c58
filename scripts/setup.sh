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
    [unshare]=util-linux
    [conntrack]=conntrack
    [python3]=python3
    [curl]=curl
    [file]=file
    [setpriv]=util-linux
    # flanneld's --vxlan-tx-checksum-off test reads the feature back with it.
    [ethtool]=ethtool
    # The wireguard backend's tests: `wg` shows and sets WireGuard devices; wireguard-go
    # runs a Go node's device on this kernel, which has no WireGuard module.
    [wg]=wireguard-tools
    [wireguard-go]=wireguard-go
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

# install_services PKG...: installs packages whose services the tests must not have running:
# a policy-rc.d keeps them from starting during the install, and they are disabled after it
# (a reboot does not start them either). The tests start their own instances inside
# namespaces they create.
install_services() {
    echo "setup: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    local own_policy= installed=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null && installed=1
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ "$installed" = 1 ] || { echo "setup: installing $* failed" >&2; exit 1; }
}

# The runtimes the conformance tests drive unchanged: containerd 1.6 and ctr
# (tests/containerd_cri.rs, tests/ctr.rs), podman 4 with its CNI backend (tests/podman.rs),
# runc (crun refuses hosts with cgroup v1 and v2 side by side), busybox-static (the local
# images are built from it: there is no registry) and iptables (the Go portmap of the control
# runs writes its rules with it).
# flanneld's tests: etcd 3.4 (conformance/tests/flanneld.rs starts its own), etcdctl, openssl
# for the tests' certificates, and protoc with the well-known .proto files for etcd-client's
# build script.
services=()
command -v containerd >/dev/null 2>&1 || services+=(containerd)
command -v podman >/dev/null 2>&1 || services+=(podman)
command -v runc >/dev/null 2>&1 || services+=(runc)
command -v iptables >/dev/null 2>&1 || services+=(iptables)
dpkg -s busybox-static >/dev/null 2>&1 || services+=(busybox-static)
[ -x /usr/bin/etcd ] || services+=(etcd-server)
[ -x /usr/bin/etcdctl ] || services+=(etcd-client)
command -v openssl >/dev/null 2>&1 || services+=(openssl)
command -v protoc >/dev/null 2>&1 || services+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || services+=(libprotobuf-dev)
# scripts/bench-wireguard.sh's throughput (its package can start a server: disabled below).
command -v iperf3 >/dev/null 2>&1 || services+=(iperf3)
[ "${#services[@]}" -gt 0 ] && install_services "${services[@]}"
if command -v systemctl >/dev/null 2>&1; then
    now=()
    [ -d /run/systemd/system ] && now=(--now)
    for unit in containerd.service podman.socket podman.service podman-restart.service \
                podman-auto-update.service podman-auto-update.timer etcd.service iperf3.service; do
        if systemctl is-enabled "$unit" >/dev/null 2>&1; then
            systemctl disable "${now[@]}" "$unit" >/dev/null 2>&1 || true
        fi
    done
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust (rustup, stable >= 1.89) first" >&2
    exit 1
fi
