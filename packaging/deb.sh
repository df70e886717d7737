#!/usr/bin/env bash
# Build the Debian package of webui with dpkg-deb (no debhelper, no cargo-deb):
#
#   packaging/deb.sh [--binary FILE] [--out DIR]
#
#   /usr/bin/webui                                     the binary (debug info stripped)
#   /lib/systemd/system/webui.service                  assets/webui.service, ExecStart
#                                                      pointing at /usr/bin/webui;
#                                                      not enabled (`webui up -d` does)
#   /usr/share/bash-completion/completions/webui       `webui completions bash`
#   /usr/share/zsh/vendor-completions/_webui           `webui completions zsh`
#   /usr/share/fish/vendor_completions.d/webui.fish    `webui completions fish`
#   /usr/share/man/man1/webui.1.gz                     `webui manpage`
#   /usr/share/doc/webui/copyright
#
# Prints the path of the .deb (webui_<version>_<arch>.deb in DIR) on stdout.
# Removing the package (dpkg -r, and dpkg -P too) never touches /var/lib/webui: the
# data, secrets and certificates stay until removed by hand.
#
#   --binary FILE   the webui binary to package [default: target/release/webui]
#   --out DIR       where the .deb goes [default: target/debian]
#   WEBUI_DEB_COMPRESS   dpkg-deb compressor: xz (default), gzip, zstd or none
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/webui
OUT=$ROOT/target/debian
while (($#)); do
	case $1 in
	--binary) BIN=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) printf 'deb.sh: unknown argument %s (see --help)\n' "$1" >&2; exit 1 ;;
	esac
done
die() { printf 'deb.sh: ERROR: %s\n' "$*" >&2; exit 1; }
[[ -x $BIN ]] || die "no binary at $BIN: build it (cargo build --release --locked) or give --binary FILE"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg package)"

version=$("$BIN" --version | awk '{print $2}')
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "cannot read the version from $BIN --version"
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/webui-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
umask 022

install -D -m 755 "$BIN" "$stage/usr/bin/webui"
if command -v strip >/dev/null; then strip --strip-debug "$stage/usr/bin/webui"; fi
install -d "$stage/lib/systemd/system"
sed 's#^ExecStart=/usr/local/bin/webui #ExecStart=/usr/bin/webui #' \
	"$ROOT/assets/webui.service" >"$stage/lib/systemd/system/webui.service"
grep -q '^ExecStart=/usr/bin/webui ' "$stage/lib/systemd/system/webui.service" ||
	die "assets/webui.service: no ExecStart=/usr/local/bin/webui line to point at /usr/bin/webui"
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
	"$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/man/man1" "$stage/usr/share/doc/webui"
"$BIN" completions bash >"$stage/usr/share/bash-completion/completions/webui"
"$BIN" completions zsh >"$stage/usr/share/zsh/vendor-completions/_webui"
"$BIN" completions fish >"$stage/usr/share/fish/vendor_completions.d/webui.fish"
"$BIN" manpage | gzip -9n >"$stage/usr/share/man/man1/webui.1.gz"
cat >"$stage/usr/share/doc/webui/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: webui

Files: *
Copyright: the webui authors
License: see the webui source repository
COPY
chmod -R u+rwX,go+rX,go-w "$stage"

# The shared libraries it links: glibc (at least the newest symbol version used) and
# libgcc_s (unwinding).
glibc=$(objdump -T "$stage/usr/bin/webui" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n 1 || true)
depends="libc6${glibc:+ (>= $glibc)}, libgcc-s1"

install -d "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: webui
Version: $version
Architecture: $arch
Maintainer: webui maintainers <maintainers@webui.invalid>
Installed-Size: $size
Depends: $depends
Recommends: docker.io | docker-ce
Section: admin
Priority: optional
Description: Open WebUI on a server with one command
 webui runs Open WebUI (and optionally Ollama) in Docker, gets certificates by
 ACME, serves its own HTTPS and WebSocket reverse proxy and supervises it all.
 "webui up --domain chat.example.com" is the whole setup; "webui up -d" runs
 it as the systemd service shipped here.
CONTROL
# systemd learns about the unit (and forgets it); nothing is enabled or started,
# and no maintainer script touches /var/lib/webui.
for script in postinst postrm; do
	cat >"$stage/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
SCRIPT
	chmod 755 "$stage/DEBIAN/$script"
done

mkdir -p "$OUT"
deb=$OUT/webui_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${WEBUI_DEB_COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
printf '%s\n' "$deb"
