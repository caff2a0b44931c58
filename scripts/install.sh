#!/usr/bin/env bash
# Installs the five plugins (static binaries), cnitool and, unless one exists, kube-flannel's
# conflist.
#
#   scripts/install.sh [--prefix DIR] [--conf-dir DIR] [--bin-dir DIR] [--no-cnitool] [--uninstall]
#
#   --prefix DIR    where the plugins go (default /opt/cni/bin)
#   --conf-dir DIR  where the conflist goes (default /etc/cni/net.d)
#   --bin-dir DIR   where cnitool goes (default /usr/local/bin)
#   --no-cnitool    leave cnitool out (neither built, installed nor removed)
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
tool_prefix=/usr/local/bin
cnitool=true
uninstall=false
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --conf-dir) conf_dir="${2:?--conf-dir needs a directory}"; shift 2 ;;
        --bin-dir) tool_prefix="${2:?--bin-dir needs a directory}"; shift 2 ;;
        --no-cnitool) cnitool=false; shift ;;
        --uninstall) uninstall=true; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
DESTDIR="${DESTDIR:-}"
where="$prefix and $conf_dir"
$cnitool && where="$prefix, $conf_dir and $tool_prefix"
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root to install into $where (or set DESTDIR to stage a package)" >&2
    exit 1
fi
bin_dir="$DESTDIR$prefix"
net_dir="$DESTDIR$conf_dir"
tool_dir="$DESTDIR$tool_prefix"
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

# Whether $1 is our cnitool: run without arguments, it prints its usage.
is_our_cnitool() {
    local out
    out=$("$1" 2>&1 </dev/null) || true
    [[ "$out" == "cnitool: usage: cnitool add|check|del <network> <netns-path>"* ]]
}

# Installs the built binary $1 as $2/$1, unless the same file is there.
install_binary() {
    local src="target/static/$target/release/$1" dest="$2/$1"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        echo "unchanged $dest"
        return
    fi
    # A new file renamed into place: a runtime executing the old one is not disturbed.
    install -m 0755 "$src" "$2/.$1.new"
    mv -f "$2/.$1.new" "$dest"
    echo "installed $dest"
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
    f="$tool_dir/cnitool"
    if $cnitool && [ -f "$f" ] && is_our_cnitool "$f"; then
        rm -f "$f" && echo "removed $f"
    elif $cnitool && [ -e "$f" ]; then
        echo "kept $f: not installed by this suite"
    fi
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
packages=("${PLUGINS[@]}")
$cnitool && packages+=(cnitool)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" \
    --target-dir target/static -q $(printf -- '-p %s ' "${packages[@]}")
mkdir -p "$bin_dir"
for p in "${PLUGINS[@]}"; do
    install_binary "$p" "$bin_dir"
done
if $cnitool; then
    mkdir -p "$tool_dir"
    install_binary cnitool "$tool_dir"
fi
mkdir -p "$net_dir"
if [ -e "$conflist" ]; then
    echo "kept $conflist (it exists)"
else
    conflist_text >"$net_dir/.10-flannel.conflist.new"
    chmod 0644 "$net_dir/.10-flannel.conflist.new"
    mv -f "$net_dir/.10-flannel.conflist.new" "$conflist"
    echo "installed $conflist"
fi
