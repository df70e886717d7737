#!/usr/bin/env bash
# Make sure the "fresh Debian server" image for the install.sh tests exists in
# the local dockerd, and print its name on stdout (progress goes to stderr).
#
#   tests/install/image.sh            -> webui-test/debian-fresh:bookworm-r<RECIPE>
#
# The image is a `debootstrap --variant=minbase bookworm` root filesystem
# (plus curl, wget and ca-certificates: the one-line `curl ... | sh` needs one of
# them; the tests hide them in turn),
# imported with `docker import`. It is built once and reused: the tag carries
# RECIPE, and the rootfs is kept under /var/lib/webui-ci/debian-fresh/ so that
# even a removed image is re-imported without a second debootstrap.
# Bump RECIPE when the debootstrap command below changes.
#
# Needs: root, debootstrap, docker. Knobs (environment):
#   WEBUI_TEST_DEBIAN_MIRROR   apt mirror for debootstrap [default: the host's, else deb.debian.org]
#   WEBUI_TEST_DOCKER_CLI      docker CLI [default: /usr/bin/docker, else docker on PATH]
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

RECIPE=2
SUITE=bookworm
IMAGE=webui-test/debian-fresh:$SUITE-r$RECIPE
STATE=/var/lib/webui-ci/debian-fresh
ROOTFS=$STATE/rootfs-$SUITE-r$RECIPE
INCLUDE=curl,wget,ca-certificates

log() { printf 'install-image: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

if [[ -n ${WEBUI_TEST_DOCKER_CLI:-} ]]; then
	DOCKER=$WEBUI_TEST_DOCKER_CLI
elif [[ -x /usr/bin/docker ]]; then
	DOCKER=/usr/bin/docker
else
	DOCKER=$(command -v docker) || die "no docker CLI found"
fi

mkdir -p "$STATE"
# One builder at a time (parallel tests, parallel cargo test runs).
exec 9>"$STATE/.lock"
flock 9

if [[ $("$DOCKER" image inspect -f '{{index .Config.Labels "webui.test.recipe"}}' "$IMAGE" 2>/dev/null || true) == "$RECIPE" ]]; then
	log "$IMAGE present, reusing it"
	printf '%s\n' "$IMAGE"
	exit 0
fi

if [[ ! -f $ROOTFS/.complete ]]; then
	[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
	command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
	mirror=${WEBUI_TEST_DEBIAN_MIRROR:-}
	if [[ -z $mirror ]]; then
		mirror=$(grep -hs -m1 -oE '^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?' \
			/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
			grep -oE 'https?://[^[:space:]]+' | head -n 1 || true)
		mirror=${mirror:-http://deb.debian.org/debian}
	fi
	tmp=$ROOTFS.tmp
	rm -rf "$tmp"
	log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror (a few minutes, once)"
	start=$SECONDS
	if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" >"$STATE/debootstrap.log" 2>&1; then
		tail -n 30 "$STATE/debootstrap.log" >&2 || true
		die "debootstrap failed (log: $STATE/debootstrap.log)"
	fi
	# Smaller image, nothing host-specific left behind.
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/*.log
	touch "$tmp/.complete"
	rm -rf "$ROOTFS"
	mv "$tmp" "$ROOTFS"
	log "debootstrap done in $((SECONDS - start))s ($ROOTFS)"
fi

log "importing $ROOTFS as $IMAGE"
tar --numeric-owner --exclude=./.complete -C "$ROOTFS" -c . |
	"$DOCKER" import \
		--change 'CMD ["/bin/bash"]' \
		--change "LABEL webui.test.recipe=$RECIPE" \
		--change "LABEL webui.test.image=debian-fresh" \
		- "$IMAGE" >/dev/null
# Earlier recipes' rootfs and images are dead weight now.
for old in "$STATE"/rootfs-*; do
	if [[ -d $old && $old != "$ROOTFS" ]]; then
		log "removing the old $old"
		rm -rf "$old"
	fi
done
for old in $("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' webui-test/debian-fresh); do
	if [[ $old != "$IMAGE" ]]; then
		if "$DOCKER" rmi "$old" >/dev/null 2>&1; then log "removed the old image $old"; fi
	fi
done
printf '%s\n' "$IMAGE"
