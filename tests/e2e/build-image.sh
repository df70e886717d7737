#!/usr/bin/env bash
# Builds the REAL Open WebUI (pinned, from PyPI) as a Docker image for the e2e suite
# and pushes it to the local test registry:
#
#   tests/e2e/build-image.sh            # prints the image reference on its last line
#
# 1. rootfs: a debootstrap'd Debian bookworm (python3 3.11 + runtime libraries) with a
#    venv at /app/venv holding `open-webui==$OPENWEBUI_VERSION` from PyPI (pip runs
#    in a chroot), packed as one tarball;
# 2. image: that tarball as the first layer and tests/e2e/image/start.sh (HOST/PORT
#    like the official image's start script, DATA_DIR=/app/backend/data) as the
#    second, with the offline settings (OFFLINE_MODE, HF_HUB_OFFLINE) in the config;
#    pushed as an OCI manifest with uncompressed layers straight to the registry's
#    HTTP API as 127.0.0.1:5000/webui-test/open-webui-real:<version>. No local copy
#    is left: `webui up` really pulls it.
#
# Cache (/var/lib/webui-ci/e2e): the rootfs tarball keyed by version + rootfs recipe,
# pip's download cache. Nothing is built when the registry already has the tag with
# the same `webui.test.recipe` label (rootfs recipe + image/ files).
#
# Knobs: OPENWEBUI_VERSION (default below), WEBUI_E2E_FORCE_BUILD=1,
#        WEBUI_TEST_REGISTRY (default 127.0.0.1:5000), DEBIAN_MIRROR.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${OPENWEBUI_VERSION:-0.12.4}
REGISTRY=${WEBUI_TEST_REGISTRY:-127.0.0.1:5000}
REPO=webui-test/open-webui-real
IMAGE=$REGISTRY/$REPO:$VERSION
CACHE=/var/lib/webui-ci/e2e
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
# Debian packages of the rootfs (runtime libraries Open WebUI's wheels load).
PACKAGES=python3,python3-venv,ca-certificates,libglib2.0-0,libsm6,libxext6,libgomp1,libmagic1,curl,netbase,tzdata
# Bump when the rootfs steps below change (the tarball is keyed by it).
ROOTFS_REV=1
ROOTFS_KEY=$(printf '%s\n' "rev=$ROOTFS_REV" "version=$VERSION" "packages=$PACKAGES" | sha256sum | cut -c1-16)
ROOTFS_TAR=$CACHE/open-webui-$VERSION-$ROOTFS_KEY.tar
# The image's recipe: the rootfs, the start script, and how this file assembles them.
RECIPE=$( { echo "$ROOTFS_KEY"; cat "$HERE/image/start.sh"; sed -n '/^# ---- the image/,$p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)

T0=$SECONDS
log() { printf 'e2e-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
step_t=$SECONDS
step() { step_t=$SECONDS; log "== $*"; }
step_done() { log "   done in $((SECONDS - step_t))s"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, docker)"
mkdir -p "$CACHE"

remote_label() {
	local manifest digest
	manifest=$(curl -fsS --max-time 10 \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$REGISTRY/v2/$REPO/manifests/$VERSION" 2>/dev/null) || return 1
	digest=$(jq -r '.config.digest // empty' <<<"$manifest")
	[[ -n $digest ]] || return 1
	curl -fsSL --max-time 10 "http://$REGISTRY/v2/$REPO/blobs/$digest" 2>/dev/null |
		jq -r '.config.Labels["webui.test.recipe"] // empty'
}

if [[ ${WEBUI_E2E_FORCE_BUILD:-} != 1 ]] && [[ $(remote_label || true) == "$RECIPE" ]]; then
	log "$IMAGE is in the registry with recipe $RECIPE, skipping the build (${SECONDS}s)"
	echo "$IMAGE"
	exit 0
fi

STAGE=""
cleanup() {
	local rc=$? m
	if [[ -n $STAGE && -d $STAGE ]]; then
		for m in tmp/host-ca.pem root/.cache/pip dev/pts dev proc; do
			if mountpoint -q "$STAGE/$m" 2>/dev/null; then umount -l "$STAGE/$m" || true; fi
		done
		rm -rf --one-file-system "$STAGE"
	fi
	exit "$rc"
}
trap cleanup EXIT

if [[ -f $ROOTFS_TAR && ${WEBUI_E2E_FORCE_BUILD:-} != 1 ]]; then
	log "rootfs tarball cached: $ROOTFS_TAR"
else
	command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
	# The staging tree and the tarball (7.5 GB each), then the registry's copy.
	avail_gb=$(($(df --output=avail -k "$CACHE" | tail -n 1) / 1048576))
	((avail_gb >= 24)) || die "only ${avail_gb} GB free under $CACHE; a first build needs about 24 GB"
	STAGE=$(mktemp -d "$CACHE/stage.XXXXXX")
	step "debootstrap bookworm ($PACKAGES)"
	debootstrap --variant=minbase --include="$PACKAGES" bookworm "$STAGE" "$MIRROR" \
		>"$CACHE/debootstrap.log" 2>&1 || {
		tail -n 30 "$CACHE/debootstrap.log" >&2
		die "debootstrap failed (see $CACHE/debootstrap.log)"
	}
	step_done

	step "pip install open-webui==$VERSION into /app/venv (chroot)"
	mkdir -p "$CACHE/pip-cache" "$STAGE/root/.cache/pip" "$STAGE/app/backend/data"
	mount -t proc proc "$STAGE/proc"
	mount --bind /dev "$STAGE/dev"
	mount --bind /dev/pts "$STAGE/dev/pts"
	mount --bind "$CACHE/pip-cache" "$STAGE/root/.cache/pip"
	# The host's CA bundle (it may hold a proxy's root) for pip, only during the build.
	touch "$STAGE/tmp/host-ca.pem"
	mount --bind -o ro /etc/ssl/certs/ca-certificates.crt "$STAGE/tmp/host-ca.pem"
	cp /etc/resolv.conf "$STAGE/etc/resolv.conf"
	chroot "$STAGE" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
		PIP_CERT=/tmp/host-ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
		PIP_PROGRESS_BAR=off PIP_CACHE_DIR=/root/.cache/pip \
		/bin/sh -euc "python3 -m venv /app/venv && /app/venv/bin/pip install -q --upgrade pip wheel &&
			/app/venv/bin/pip install -q 'open-webui==$VERSION'"
	for m in tmp/host-ca.pem root/.cache/pip dev/pts dev proc; do umount "$STAGE/$m"; done
	rm -f "$STAGE/tmp/host-ca.pem"
	step_done

	step "rootfs tarball"
	: >"$STAGE/etc/resolv.conf"
	rm -rf "$STAGE/var/cache/apt/archives"/*.deb "$STAGE/var/lib/apt/lists"/* "$STAGE/root/.cache"
	tar --numeric-owner -C "$STAGE" -cf "$ROOTFS_TAR.tmp" .
	mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
	rm -rf --one-file-system "$STAGE"
	STAGE=""
	# Tarballs of other recipes are dead weight (7+ GB each).
	find "$CACHE" -maxdepth 1 -name "open-webui-*.tar*" ! -name "$(basename "$ROOTFS_TAR")*" -delete
	log "rootfs $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
	step_done
fi

# ---- the image, pushed straight to the registry's HTTP API (no dockerd involved):
# an OCI manifest with two uncompressed layers (the rootfs tarball as is, and the
# start script). `docker push` would gzip 7+ GB on one core (15+ min here) and dies
# with dockerd restarts of other tests; an uncompressed upload takes a minute, and
# dockerd pulls uncompressed OCI layers fine.
step "layer digests"
if [[ -f $ROOTFS_TAR.sha256 && $ROOTFS_TAR.sha256 -nt $ROOTFS_TAR ]]; then
	ROOTFS_SHA=$(<"$ROOTFS_TAR.sha256")
else
	ROOTFS_SHA=$(sha256sum "$ROOTFS_TAR" | cut -d' ' -f1)
	printf '%s' "$ROOTFS_SHA" >"$ROOTFS_TAR.sha256"
fi
WORK=$(mktemp -d /tmp/webui-e2e-image.XXXXXX)
STAGE=$WORK/start # removed by the EXIT trap
mkdir -p "$STAGE/app"
install -m 755 "$HERE/image/start.sh" "$STAGE/app/start.sh"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$STAGE" -cf "$WORK/start.tar" ./app/start.sh
START_SHA=$(sha256sum "$WORK/start.tar" | cut -d' ' -f1)
step_done

step "push $IMAGE (uncompressed layers)"
R=http://$REGISTRY/v2/$REPO
push_blob() { # file sha
	local loc sep
	if curl -fsS -o /dev/null -I "$R/blobs/sha256:$2" 2>/dev/null; then
		log "blob sha256:${2:0:12} already in the registry"
		return
	fi
	loc=$(curl -fsS -D - -o /dev/null -X POST "$R/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
	[[ -n $loc ]] || die "the registry gave no upload location"
	[[ $loc == http* ]] || loc=http://$REGISTRY$loc
	if [[ $loc == *\?* ]]; then sep='&'; else sep='?'; fi
	curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T "$1" \
		"$loc${sep}digest=sha256:$2" -o /dev/null || die "uploading $1 failed"
	log "pushed blob sha256:${2:0:12} ($(du -h "$1" | cut -f1))"
}
push_blob "$ROOTFS_TAR" "$ROOTFS_SHA"
push_blob "$WORK/start.tar" "$START_SHA"
jq -n --arg rootfs "sha256:$ROOTFS_SHA" --arg start "sha256:$START_SHA" \
	--arg recipe "$RECIPE" --arg version "$VERSION" '{
	architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z",
	config: {
		Env: [
			"PATH=/app/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=/root", "HOST=0.0.0.0", "PORT=8080", "DATA_DIR=/app/backend/data",
			"FRONTEND_BUILD_DIR=/app/venv/lib/python3.11/site-packages/open_webui/frontend",
			"OFFLINE_MODE=true", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1",
			"RAG_EMBEDDING_MODEL_AUTO_UPDATE=false",
			"ANONYMIZED_TELEMETRY=false", "DO_NOT_TRACK=true", "SCARF_NO_ANALYTICS=true"
		],
		Cmd: ["/app/start.sh"],
		WorkingDir: "/app/backend",
		ExposedPorts: {"8080/tcp": {}},
		Labels: {"webui.test.recipe": $recipe, "org.opencontainers.image.version": $version}
	},
	rootfs: {type: "layers", diff_ids: [$rootfs, $start]},
	history: [
		{created: "1970-01-01T00:00:00Z", created_by: "debootstrap bookworm + pip install open-webui==\($version) (tests/e2e/build-image.sh)"},
		{created: "1970-01-01T00:00:00Z", created_by: "tests/e2e/image/start.sh"}
	]}' >"$WORK/config.json"
CONFIG_SHA=$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
push_blob "$WORK/config.json" "$CONFIG_SHA"
jq -n --arg c "sha256:$CONFIG_SHA" --argjson cs "$(stat -c %s "$WORK/config.json")" \
	--arg l1 "sha256:$ROOTFS_SHA" --argjson s1 "$(stat -c %s "$ROOTFS_TAR")" \
	--arg l2 "sha256:$START_SHA" --argjson s2 "$(stat -c %s "$WORK/start.tar")" '{
	schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
	layers: [
		{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l1, size: $s1},
		{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l2, size: $s2}
	]}' >"$WORK/manifest.json"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
	--data-binary "@$WORK/manifest.json" "$R/manifests/$VERSION" -o /dev/null || die "PUT manifest failed"
rm -rf "$WORK"
STAGE=""
# Tests must exercise a real pull: no local copy.
"$DOCKER" rmi "$IMAGE" >/dev/null 2>&1 || true
step_done
log "built $IMAGE (recipe $RECIPE) in $((SECONDS - T0))s"
echo "$IMAGE"
