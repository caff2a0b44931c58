#!/usr/bin/env bash
# Installs the five plugins (static binaries) and, unless one exists, kube-flannel's conflist.
#
#   scripts/install.sh [--prefix DIR] [--conf-dir DIR] [--uninstall]
#
#   --prefix DIR    where the plugins go (default /opt/cni/bin)
#   --conf-dir DIR  where the conflist goes (default /etc/cni/net.d)
#   --uninstall     remove what install put there (a conflist edited since is kept)
#   DESTDIR=...     stage everything below this directory (packaging); root not needed then
#
# The binaries are linked statically against glibc (static-pie) for the build machine's
# architecture, so they run on any Linux node of that architecture whatever its libc. It
# needs cargo (Rust >= 1.89) and gcc/libc6-dev, and installs nothing else: on a production
# node, rather build elsewhere with DESTDIR and copy the staged files. Running it again
# changes nothing that is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PLUGINS=(flannel bridge host-local portmap loopback)
prefix=/opt/cni/bin
conf_dir=/etc/cni/net.d
uninstall=false
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --conf-dir) conf_dir="${2:?--conf-dir needs a directory}"; shift 2 ;;
        --uninstall) uninstall=true; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
DESTDIR="${DESTDIR:-}"
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root to install into $prefix and $conf_dir (or set DESTDIR to stage a package)" >&2
    exit 1
fi
bin_dir="$DESTDIR$prefix"
net_dir="$DESTDIR$conf_dir"
conflist="$net_dir/10-flannel.conflist"

# kube-flannel's cni-conf.json, in meaning.
conflist_text() {
    cat <<'CONF'
{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
CONF
}

if $uninstall; then
    for p in "${PLUGINS[@]}"; do
        f="$bin_dir/$p"
        # Only ours: their about text starts with "CNI <name> plugin v".
        if [ -f "$f" ] && "$f" 2>&1 </dev/null | grep -q "^CNI $p plugin v"; then
            rm -f "$f" && echo "removed $f"
        elif [ -e "$f" ]; then
            echo "kept $f: not installed by this suite"
        fi
    done
    if [ -f "$conflist" ] && [ "$(cat "$conflist")" = "$(conflist_text)" ]; then
        rm -f "$conflist" && echo "removed $conflist"
    elif [ -f "$conflist" ]; then
        echo "kept $conflist: it was changed after install"
    fi
    exit 0
fi

command -v cargo >/dev/null 2>&1 || { echo "install: cargo not found: install Rust (rustup) first" >&2; exit 1; }
target=$(rustc -vV | sed -n 's/^host: //p')
echo "building static binaries (glibc static-pie, $target)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" \
    --target-dir target/static -q $(printf -- '-p %s ' "${PLUGINS[@]}")
mkdir -p "$bin_dir"
for p in "${PLUGINS[@]}"; do
    src="target/static/$target/release/$p"
    if [ -f "$bin_dir/$p" ] && cmp -s "$src" "$bin_dir/$p"; then
        echo "unchanged $bin_dir/$p"
        continue
    fi
    # A new file renamed into place: a runtime executing the old one is not disturbed.
    install -m 0755 "$src" "$bin_dir/.$p.new"
    mv -f "$bin_dir/.$p.new" "$bin_dir/$p"
    echo "installed $bin_dir/$p"
done
mkdir -p "$net_dir"
if [ -e "$conflist" ]; then
    echo "kept $conflist (it exists)"
else
    conflist_text >"$net_dir/.10-flannel.conflist.new"
    chmod 0644 "$net_dir/.10-flannel.conflist.new"
    mv -f "$net_dir/.10-flannel.conflist.new" "$conflist"
    echo "installed $conflist"
fi
