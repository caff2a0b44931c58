#!/usr/bin/env bash
# Builds the flannel image of this suite, kube-flannel's DaemonSet image: flanneld where
# kube-flannel.yml runs it (/opt/bin/flanneld), the five CNI plugins at the image's root
# (/flannel, /bridge, /host-local, /portmap, /loopback: /flannel is where kube-flannel's
# plugin image keeps it) and /opt/bin/install-conf, which the init containers run to put the
# plugins and the conflist on the node (atomically, with no shell in the image). The binaries
# are static (glibc static-pie, as scripts/install.sh builds them); beside them only Debian's
# iptables tools with what they load (flanneld removes Go flanneld's iptables chains with
# them): no base image, no shell, no package manager.
#
#   scripts/image.sh [--out FILE]   # default target/image/cni-rs-flannel.tar
#
# podman builds it FROM scratch with a private storage under target/ (the machine's own
# image store is not touched) and saves it as a docker-archive tar, which every runtime
# imports: `ctr -n k8s.io images import FILE` (containerd), `podman load -i FILE`. Its name is
# localhost/cni-rs/flannel:v<version>. Needs cargo, gcc/libc6-dev and podman (installed by
# scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/image/cni-rs-flannel.tar
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="${2:?--out needs a file}"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "image: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v podman >/dev/null 2>&1 || { echo "image: podman not found (apt-get install podman)" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || { echo "image: cargo not found: install Rust (rustup) first" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="localhost/cni-rs/flannel:v$version"
target=$(rustc -vV | sed -n 's/^host: //p')
PLUGINS=(flannel bridge host-local portmap loopback)
echo "image: building static binaries (glibc static-pie, $target)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" \
    --target-dir target/static -q -p flanneld -p install-conf $(printf -- '-p %s ' "${PLUGINS[@]}")
bin="target/static/$target/release"

work=$(mktemp -d "$PWD/target/image-build.XXXXXX")
cleanup() {
    # podman's private storage may hold mounts (vfs holds none; be sure anyway).
    podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs \
        rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/root/opt/bin"
install -m 0755 "$bin/flanneld" "$bin/install-conf" "$work/root/opt/bin/"
for p in "${PLUGINS[@]}"; do
    install -m 0755 "$bin/$p" "$work/root/$p"
done
# iptables' tools (Debian's, with the libraries and extensions they load): flanneld removes Go
# flanneld's iptables-mode chains with them at start, so a node moved from Go's DaemonSet to
# this one does not keep Go's masquerade rules beside ours. Only flanneld runs them.
for multi in xtables-nft-multi xtables-legacy-multi; do
    [ -x "/usr/sbin/$multi" ] || { echo "image: /usr/sbin/$multi missing (apt-get install iptables)" >&2; exit 1; }
    cp --parents -L "/usr/sbin/$multi" "$work/root/"
    ldd "/usr/sbin/$multi" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
        cp --parents -L "$lib" "$work/root/"
    done
done
for v in iptables ip6tables; do
    ln -s xtables-nft-multi "$work/root/usr/sbin/$v-nft"
    ln -s xtables-legacy-multi "$work/root/usr/sbin/$v-legacy"
done
xt=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/xtables
mkdir -p "$work/root$xt"
cp -L "$xt"/*.so "$work/root$xt/"
# The copied tools start inside the image's tree (its loader, its libraries).
chroot "$work/root" /usr/sbin/iptables-legacy --version >/dev/null
chroot "$work/root" /usr/sbin/iptables-nft --version >/dev/null

cat >"$work/Containerfile" <<CONTAINERFILE
FROM scratch
COPY root/ /
LABEL org.opencontainers.image.title="cni-rs flannel" \\
      org.opencontainers.image.description="flanneld, the five CNI plugins and install-conf of cni-rs, static; iptables' tools for removing Go flanneld's chains" \\
      org.opencontainers.image.version="$version"
ENTRYPOINT ["/opt/bin/flanneld"]
CONTAINERFILE

pod() { podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
echo "image: podman build $name (FROM scratch)"
pod build --quiet --network none --tag "$name" --file "$work/Containerfile" "$work" >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out"
pod save --quiet --format docker-archive --output "$out" "$name"
size=$(pod image inspect --format '{{.Size}}' "$name")
echo "image: $name saved to $out ($(stat -c %s "$out") bytes; image size $size bytes):"
(cd "$work/root" && find . -type f -not -path './usr/lib/*' -not -path './lib*' -printf '  /%P %s bytes\n' | sort)
echo "  + $(cd "$work/root" && find ./usr/lib ./lib* -type f | wc -l) libraries and iptables extensions, $(cd "$work/root" && du -cb ./usr/lib ./lib* | tail -1 | cut -f1) bytes"
