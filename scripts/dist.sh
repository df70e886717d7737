#!/usr/bin/env bash
# Build the release artifacts of webui into dist/:
#
#   scripts/dist.sh                      # this machine's architecture (x86_64 here)
#   scripts/dist.sh --target aarch64-unknown-linux-gnu
#
# Writes, for <version> from Cargo.toml and <arch> x86_64 or aarch64:
#   dist/webui-<version>-<arch>-linux          stripped release binary
#   dist/webui-<version>-<arch>-linux.sha256   `sha256sum` line for it
#   dist/webui.service, dist/webui.service.sha256   the systemd unit (assets/webui.service)
#   dist/install.sh                             the installer
#   dist/LATEST                                 <version>
# Upload every file in dist/ as an asset of the GitHub release v<version>; that is
# the layout install.sh reads (latest/download/LATEST, download/v<version>/<file>).
# `webui --version` of the binary names the version and the git commit it was built
# from (build.rs), so build from a clean checkout of the release tag.
#
# Cross-building for aarch64 on an x86_64 Debian/Ubuntu machine:
#   rustup target add aarch64-unknown-linux-gnu
#   apt-get install gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu
#   export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
#   export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc   # ring compiles C/asm
#   scripts/dist.sh --target aarch64-unknown-linux-gnu
# The binary links against glibc dynamically: build on the oldest distribution you
# support (Debian 12 here) so it runs on newer ones too. The stripping tool is
# aarch64-linux-gnu-strip (override with STRIP=...). Running the same script on an
# aarch64 machine needs none of this.
#
# Knobs (environment): DIST_DIR [default: dist], STRIP, CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DIST_DIR=${DIST_DIR:-$ROOT/dist}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf 'dist: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

target=
while (($#)); do
	case $1 in
	--target)
		(($# >= 2)) || die "--target needs a value"
		target=$2
		shift
		;;
	--target=*) target=${1#*=} ;;
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

if [[ -z $target ]]; then
	arch=$(uname -m)
	bin=$TARGET_DIR/release/webui
	strip_tool=${STRIP:-strip}
	cargo_args=(build --release --locked)
else
	arch=${target%%-*}
	bin=$TARGET_DIR/$target/release/webui
	if [[ $arch == "$(uname -m)" ]]; then
		strip_tool=${STRIP:-strip}
	else
		strip_tool=${STRIP:-$arch-linux-gnu-strip}
	fi
	cargo_args=(build --release --locked --target "$target")
fi
case $arch in
x86_64 | aarch64) ;;
amd64) arch=x86_64 ;;
arm64) arch=aarch64 ;;
*) die "unsupported architecture $arch (x86_64 or aarch64)" ;;
esac
command -v "$strip_tool" >/dev/null || die "$strip_tool not found (binutils, or binutils-$arch-linux-gnu when cross-building)"

# The version of the package, e.g. "path+file:///src/webui#0.1.0" or "...#webui@0.1.0".
pkgid=$(cargo pkgid --quiet)
version=${pkgid##*[#@]}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] || die "cannot read the version from cargo pkgid: $pkgid"

if [[ -n $(git status --porcelain 2>/dev/null || true) ]]; then
	log "note: the work tree has uncommitted changes; the binary reports commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) anyway"
fi

log "cargo ${cargo_args[*]}"
cargo "${cargo_args[@]}"
[[ -x $bin ]] || die "cargo did not produce $bin"

mkdir -p "$DIST_DIR"
asset=webui-$version-$arch-linux
tmp=$(mktemp "$DIST_DIR/.$asset.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cp "$bin" "$tmp"
"$strip_tool" "$tmp"
chmod 755 "$tmp"
if [[ $arch == "$(uname -m)" ]]; then
	reported=$("$tmp" --version)
	[[ $reported == "webui $version "* ]] || die "the binary reports '$reported', expected webui $version"
else
	reported="(cross-built for $arch, not run here)"
fi
mv -f "$tmp" "$DIST_DIR/$asset"
trap - EXIT

cp assets/webui.service "$DIST_DIR/webui.service"
cp install.sh "$DIST_DIR/install.sh"
chmod 644 "$DIST_DIR/webui.service"
chmod 755 "$DIST_DIR/install.sh"
printf '%s\n' "$version" >"$DIST_DIR/LATEST"
(
	cd "$DIST_DIR"
	sha256sum "$asset" >"$asset.sha256"
	sha256sum webui.service >webui.service.sha256
)

log "made in $DIST_DIR ($reported):"
(
	cd "$DIST_DIR"
	for f in "$asset" "$asset.sha256" webui.service webui.service.sha256 install.sh LATEST; do
		printf '  %-40s %10s bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)..."
	done
)
