#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 binaries the tests' control plane runs (drivers/src/kube.rs)
# from Debian's `kubernetes` source package (1.20.5+really1.20.2, bookworm) with the Go it was
# released with, Go 1.15 (Debian bullseye's golang-1.15-go + golang-1.15-src, unpacked, never
# installed), and caches them outside the source tree: $CNI_RS_KUBE_CACHE (default
# /var/cache/cni-rs/kubernetes-1.20.2), binaries in bin/. Does nothing when they are cached.
#
# The machine's apt sources stay as they are: the downloads go through a private apt
# configuration (its own source list, package lists and archive cache) in a work directory
# under the cache, deleted with the source tree and Go's build cache once the binaries are
# copied. A lock on $CACHE/.lock keeps two callers from building at the same time.
set -euo pipefail

CACHE=${CNI_RS_KUBE_CACHE:-/var/cache/cni-rs/kubernetes-1.20.2}
BINS=(kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet)
# Debian's upstream tarball of the source package, and its version in bookworm.
ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
TREE=kubernetes-1.20.2
ARCHIVE_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

cached() {
    local b
    for b in "${BINS[@]}"; do
        [ -x "$CACHE/bin/$b" ] || return 1
    done
}

if cached; then
    echo "kube-build: Kubernetes 1.20.2 is cached in $CACHE/bin"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "kube-build: run as root: building Kubernetes 1.20.2 needs apt-get (rsync, make) and $CACHE" >&2
    exit 1
fi

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    echo "kube-build: another kube-build.sh is building into $CACHE; waiting for it"
    flock 9
fi
# The other caller may have built them while this one waited.
if cached; then
    echo "kube-build: Kubernetes 1.20.2 is cached in $CACHE/bin"
    exit 0
fi

echo "kube-build: building Kubernetes 1.20.2 from Debian's source once: about 6 minutes on 2 cores" \
    "(and 4 GB of temporary disk), cached in $CACHE/bin"
start=$(date +%s)

# What a run killed half-way left behind (the lock says no build runs now).
rm -rf "$CACHE"/work.*
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
LOG="$CACHE/build.log"
cleanup() {
    local rc=$?
    rm -rf "$WORK"
    if [ "$rc" -ne 0 ]; then
        echo "kube-build: failed (exit $rc); the build's log is $LOG" >&2
    fi
}
trap cleanup EXIT
: >"$LOG"

# The generators run by the Makefile copy trees with rsync.
missing=()
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v make >/dev/null 2>&1 || missing+=(make)
[ -f "$ARCHIVE_KEYRING" ] || missing+=(debian-archive-keyring)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "kube-build: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian archive the machine already uses: the first URI of a deb822 stanza for bookworm
# (or for any suite that is not a security one), else of a one-line `deb` entry.
archive_uri() {
    local f uri=
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                u = ""; s = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
                    if ($i ~ /^Suites:/) { s = $i }
                }
                if (u != "" && s !~ /security/ && s ~ /[ \t]bookworm([ \t]|$)/) { print u; exit }
                if (u != "" && s !~ /security/ && other == "") { other = u }
            }
            END { if (other != "") print other }' "$f" | head -n1)
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {
                for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
URI=$(archive_uri)

# The private apt configuration: no system source list, private lists and archive cache.
APT="$WORK/apt"
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial"
cat >"$APT/sources.list.d/kube-build.sources" <<EOF
Types: deb
URIs: $URI
Suites: bullseye
Components: main
Signed-By: $ARCHIVE_KEYRING

Types: deb-src
URIs: $URI
Suites: bookworm
Components: main
Signed-By: $ARCHIVE_KEYRING
EOF
A=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT/sources.list.d"
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -q)
# apt downloads as the unprivileged _apt user when it can write there.
DL="$WORK/dl"
mkdir -p "$DL"
chmod 755 "$WORK" "$APT" "$APT/cache" "$APT/cache/archives"
if id _apt >/dev/null 2>&1; then
    chown -R _apt "$DL" "$APT/lists" "$APT/cache/archives/partial"
fi

echo "kube-build: downloading Go 1.15 (bullseye) and the kubernetes source (bookworm) from $URI"
apt-get "${A[@]}" update >>"$LOG" 2>&1
(
    cd "$DL"
    apt-get "${A[@]}" download golang-1.15-go golang-1.15-src
    apt-get "${A[@]}" source --download-only kubernetes
) >>"$LOG" 2>&1
[ -f "$DL/$ORIG" ] || {
    echo "kube-build: apt-get source kubernetes did not bring $ORIG (bookworm's source package changed?)" >&2
    exit 1
}

echo "kube-build: unpacking"
GO_ROOT_DIR="$WORK/go115"
for deb in "$DL"/golang-1.15-go_*.deb "$DL"/golang-1.15-src_*.deb; do
    dpkg-deb -x "$deb" "$GO_ROOT_DIR"
done
export GOROOT="$GO_ROOT_DIR/usr/lib/go-1.15"
[ -x "$GOROOT/bin/go" ] || { echo "kube-build: no go binary in $GOROOT" >&2; exit 1; }
go_version=$("$GOROOT/bin/go" version)
mkdir -p "$WORK/src"
tar -xzf "$DL/$ORIG" -C "$WORK/src"
SRC="$WORK/src/$TREE"
[ -f "$SRC/Makefile" ] || { echo "kube-build: $ORIG has no $TREE/Makefile" >&2; exit 1; }
dsc=
for f in "$DL"/kubernetes_*.dsc; do
    if [ -f "$f" ]; then dsc=$(basename "$f"); fi
done

# Go's caches in the work dir (not ~/.cache), no setting of the caller's Go leaking in.
unset GOFLAGS GO111MODULE GOBIN GOPROXY GOTOOLCHAIN GOOS GOARCH CGO_ENABLED
export GOCACHE="$WORK/gocache" GOPATH="$WORK/gopath" GOTMPDIR="$WORK/gotmp"
mkdir -p "$GOCACHE" "$GOPATH" "$GOTMPDIR"
export PATH="$GOROOT/bin:$PATH"

what="${BINS[*]/#/cmd/}"
echo "kube-build: make WHAT=\"$what\" with $go_version (log: $LOG)"
build() { (cd "$SRC" && make WHAT="$what") >>"$LOG" 2>&1; }
if ! build; then
    # A failed first run leaves an empty _output/bin/prerelease-lifecycle-gen behind, which
    # the next run takes for built.
    echo "kube-build: the build failed; once more from a clean _output"
    rm -rf "$SRC/_output"
    if ! build; then
        tail -n 40 "$LOG" >&2
        exit 1
    fi
fi

for b in "${BINS[@]}"; do
    [ -s "$SRC/_output/bin/$b" ] || { echo "kube-build: make built no $b" >&2; exit 1; }
done
for b in "${BINS[@]}"; do
    cp "$SRC/_output/bin/$b" "$CACHE/bin/.$b.tmp"
    chmod 755 "$CACHE/bin/.$b.tmp"
    mv -f "$CACHE/bin/.$b.tmp" "$CACHE/bin/$b"
done
version=$("$CACHE/bin/kube-apiserver" --version 2>&1 || true)
{
    echo "$version"
    echo "source: Debian ${dsc:-$ORIG} from $URI bookworm"
    echo "go: $go_version (Debian bullseye golang-1.15-go)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$CACHE/VERSION.tmp"
mv -f "$CACHE/VERSION.tmp" "$CACHE/VERSION"
rm -f "$LOG"
secs=$(($(date +%s) - start))
echo "kube-build: $version cached in $CACHE/bin ($((secs / 60))m$((secs % 60))s)"
