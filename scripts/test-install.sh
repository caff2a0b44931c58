#!/usr/bin/env bash
# Checks scripts/install.sh as a packager and an operator would use it: install into a
# temporary prefix, run again (nothing changes), check the binaries (plugins and cnitool) are
# static and answer, --no-cnitool, uninstall, and refuse without root. Never touches /opt,
# /etc or /usr/local.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install test failed: $*" >&2; exit 1; }

dirs=(--prefix "$tmp/bin" --conf-dir "$tmp/net.d" --bin-dir "$tmp/tools")
scripts/install.sh "${dirs[@]}" >"$tmp/first.log"
for p in flannel bridge host-local portmap loopback; do
    [ -x "$tmp/bin/$p" ] || fail "$p not installed"
    file "$tmp/bin/$p" | grep -q 'static' || fail "$p is not statically linked"
    "$tmp/bin/$p" 2>&1 </dev/null | grep -q "^CNI $p plugin v" || fail "$p does not answer"
done
[ -x "$tmp/tools/cnitool" ] || fail "cnitool not installed"
[ -e "$tmp/bin/cnitool" ] && fail "cnitool installed among the plugins"
file "$tmp/tools/cnitool" | grep -q 'static' || fail "cnitool is not statically linked"
{ "$tmp/tools/cnitool" 2>&1 </dev/null || true; } | grep -q '^cnitool: usage: cnitool add' ||
    fail "cnitool does not answer"
[ -f "$tmp/net.d/10-flannel.conflist" ] || fail "conflist not installed"
scripts/install.sh "${dirs[@]}" >"$tmp/second.log"
grep -q '^installed' "$tmp/second.log" && fail "a second install changed something"
scripts/install.sh "${dirs[@]}" --uninstall --no-cnitool >/dev/null
[ -x "$tmp/tools/cnitool" ] || fail "uninstall --no-cnitool removed cnitool"
scripts/install.sh "${dirs[@]}" --uninstall >/dev/null
[ -z "$(find "$tmp/bin" "$tmp/net.d" "$tmp/tools" -mindepth 1)" ] || fail "uninstall left files"
scripts/install.sh --prefix "$tmp/bin" --conf-dir "$tmp/net.d" --bin-dir "$tmp/none" --no-cnitool >/dev/null
[ -e "$tmp/none" ] && fail "--no-cnitool installed cnitool"
scripts/install.sh "${dirs[@]}" --uninstall >/dev/null
# A copy the unprivileged user can read wherever the checkout lives.
cp scripts/install.sh "$tmp/install.sh"
chmod 0755 "$tmp" "$tmp/install.sh"
if setpriv --reuid=65534 --regid=65534 --clear-groups "$tmp/install.sh" --prefix "$tmp/x" >"$tmp/user.log" 2>&1; then
    fail "install ran without root"
fi
grep -q 'run as root' "$tmp/user.log" || fail "no clear message without root"
echo "install test: 5 static plugins and cnitool installed, second run unchanged, --no-cnitool, uninstalled, refused without root"
