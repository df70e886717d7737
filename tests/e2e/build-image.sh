#!/usr/bin/env bash
# Builds the REAL Open WebUI (pinned, from PyPI) as a Docker image for the e2e suite
# and pushes it to the local test registry:
#
#   tests/e2e/build-image.sh            # prints the image reference on its last line
#
# 1. rootfs: a debootstrap'd Debian bookworm (python3 3.11 + runtime libraries) with a
#    venv at /app/venv holding `open-webui==$OPENWEBUI_VERSION` from PyPI (pip runs
#    in a chroot, without a cache);
# 2. image: that tree as the first layer and tests/e2e/image/start.sh (HOST/PORT like
#    the official image's start script, DATA_DIR=/app/backend/data) as the second,
#    with the offline settings (OFFLINE_MODE, HF_HUB_OFFLINE) in the config; pushed
#    as an OCI manifest with gzip layers straight to the registry's HTTP API as
#    127.0.0.1:5000/webui-test/open-webui-real:<version>. The rootfs is streamed
#    tar | pigz | registry (both digests computed on the way), the staging tree is
#    deleted right after: the registry's blob is the only copy kept (the cache).
#    No local copy is left in dockerd: `webui up` really pulls it.
#
# Nothing is built when the registry already has the tag with the same
# `webui.test.recipe` label and all its blobs. After a build, the layers of the
# tag's previous manifest are removed from the registry (blob files included) so
# that a rebuild never leaves two copies of several GB behind.
#
# The CUDA wheels (nvidia-*, triton: about 4 GB of the 7.4 GB) stay: torch from PyPI
# is a CUDA build, and without them `import torch` fails (ValueError: libcublasLt
# not found); no CPU build of torch is on PyPI.
#
# Knobs: OPENWEBUI_VERSION (default below), WEBUI_E2E_FORCE_BUILD=1,
#        WEBUI_TEST_REGISTRY (default 127.0.0.1:5000), DEBIAN_MIRROR,
#        WEBUI_E2E_DISK_RESERVE_GB (free space to leave, default 3).
# Exit codes: 0 built or up to date, 1 failure, 3 not enough disk space (the
# message says how much is needed).
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${OPENWEBUI_VERSION:-0.12.4}
REGISTRY=${WEBUI_TEST_REGISTRY:-127.0.0.1:5000}
REPO=webui-test/open-webui-real
IMAGE=$REGISTRY/$REPO:$VERSION
CACHE=/var/lib/webui-ci/e2e
REGISTRY_CONFIG=/var/lib/webui-ci/registry.yml
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RESERVE_GB=${WEBUI_E2E_DISK_RESERVE_GB:-3}
# Measured with 0.12.4: the staging tree 7.0 GiB, the gzip'd layer 3.5 GiB.
STAGE_GB=8
LAYER_GB=4
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
# Debian packages of the rootfs (runtime libraries Open WebUI's wheels load).
PACKAGES=python3,python3-venv,ca-certificates,libglib2.0-0,libsm6,libxext6,libgomp1,libmagic1,curl,netbase,tzdata
# The image config (without the recipe label): part of the recipe.
CONFIG_ENV='[
	"PATH=/app/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "HOST=0.0.0.0", "PORT=8080", "DATA_DIR=/app/backend/data",
	"FRONTEND_BUILD_DIR=/app/venv/lib/python3.11/site-packages/open_webui/frontend",
	"OFFLINE_MODE=true", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1",
	"RAG_EMBEDDING_MODEL_AUTO_UPDATE=false",
	"ANONYMIZED_TELEMETRY=false", "DO_NOT_TRACK=true", "SCARF_NO_ANALYTICS=true"
]'
# Bump when the build steps below change in a way that changes the image.
BUILD_REV=2
RECIPE=$({
	printf '%s\n' "rev=$BUILD_REV" "version=$VERSION" "packages=$PACKAGES" "$CONFIG_ENV"
	cat "$HERE/image/start.sh"
} | sha256sum | cut -c1-16)

T0=$SECONDS
log() { printf 'e2e-image: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
step_t=$SECONDS
step() {
	step_t=$SECONDS
	log "== $*"
}
step_done() { log "   done in $((SECONDS - step_t))s"; }
free_gb() { echo $(($(df --output=avail -k "$1" | tail -n 1) / 1048576)); }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, docker)"
mkdir -p "$CACHE"
R=http://$REGISTRY/v2/$REPO
ACCEPT=(-H 'Accept: application/vnd.oci.image.manifest.v1+json'
	-H 'Accept: application/vnd.docker.distribution.manifest.v2+json')

curl -fsS --max-time 10 -o /dev/null "http://$REGISTRY/v2/" ||
	die "the registry does not answer on http://$REGISTRY/v2/ (bash tests/infra/setup.sh starts it)"

# The tag's current manifest and its digest (empty if none).
OLD_MANIFEST=$(curl -fsS --max-time 10 "${ACCEPT[@]}" "$R/manifests/$VERSION" 2>/dev/null || true)
OLD_DIGEST=$(curl -fsS --max-time 10 -I "${ACCEPT[@]}" "$R/manifests/$VERSION" 2>/dev/null | tr -d '\r' |
	awk 'tolower($1) == "docker-content-digest:" {print $2}' || true)
blob_exists() { curl -fsS --max-time 10 -o /dev/null -I "$R/blobs/$1" 2>/dev/null; }
up_to_date() {
	local cfg d
	[[ -n $OLD_MANIFEST ]] || return 1
	cfg=$(jq -r '.config.digest // empty' <<<"$OLD_MANIFEST")
	[[ -n $cfg ]] || return 1
	[[ $(curl -fsSL --max-time 10 "$R/blobs/$cfg" 2>/dev/null |
		jq -r '.config.Labels["webui.test.recipe"] // empty') == "$RECIPE" ]] || return 1
	for d in $(jq -r '.layers[].digest' <<<"$OLD_MANIFEST"); do
		blob_exists "$d" || {
			log "the registry lacks blob $d of $IMAGE: rebuilding"
			return 1
		}
	done
}
if [[ ${WEBUI_E2E_FORCE_BUILD:-} != 1 ]] && up_to_date; then
	log "$IMAGE is in the registry with recipe $RECIPE, skipping the build (${SECONDS}s)"
	echo "$IMAGE"
	exit 0
fi

# Leftovers of the former layout (an uncompressed rootfs tarball cache, pip's cache).
rm -rf "$CACHE"/open-webui-*.tar* "$CACHE/pip-cache" "$CACHE"/stage.*

need=$((STAGE_GB + LAYER_GB + RESERVE_GB))
have=$(free_gb "$CACHE")
if ((have < need)); then
	log "ERROR: only $have GB free under $CACHE; building the e2e image needs about $need GB"
	log "ERROR: (${STAGE_GB} GB staging tree + ${LAYER_GB} GB compressed layer in the registry + ${RESERVE_GB} GB reserve)"
	exit 3
fi
for tool in debootstrap pigz jq curl; do
	command -v "$tool" >/dev/null || die "$tool not installed (bash tests/infra/setup.sh installs it)"
done

STAGE=""
WORK=""
cleanup() {
	local rc=$? m
	if [[ -n $STAGE && -d $STAGE ]]; then
		for m in tmp/host-ca.pem dev/pts dev proc; do
			if mountpoint -q "$STAGE/$m" 2>/dev/null; then umount -l "$STAGE/$m" || true; fi
		done
		rm -rf --one-file-system "$STAGE"
	fi
	[[ -z $WORK ]] || rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
WORK=$(mktemp -d /tmp/webui-e2e-image.XXXXXX)

STAGE=$(mktemp -d "$CACHE/stage.XXXXXX")
step "debootstrap bookworm ($PACKAGES)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$STAGE" "$MIRROR" \
	>"$CACHE/debootstrap.log" 2>&1 || {
	tail -n 30 "$CACHE/debootstrap.log" >&2
	die "debootstrap failed (see $CACHE/debootstrap.log)"
}
step_done

step "pip install open-webui==$VERSION into /app/venv (chroot)"
mkdir -p "$STAGE/app/backend/data"
mount -t proc proc "$STAGE/proc"
mount --bind /dev "$STAGE/dev"
mount --bind /dev/pts "$STAGE/dev/pts"
# The host's CA bundle (it may hold a proxy's root) for pip, only during the build.
touch "$STAGE/tmp/host-ca.pem"
mount --bind -o ro /etc/ssl/certs/ca-certificates.crt "$STAGE/tmp/host-ca.pem"
cp /etc/resolv.conf "$STAGE/etc/resolv.conf"
chroot "$STAGE" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
	PIP_CERT=/tmp/host-ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
	PIP_PROGRESS_BAR=off PIP_NO_CACHE_DIR=1 \
	/bin/sh -euc "python3 -m venv /app/venv && /app/venv/bin/pip install -q --upgrade pip wheel &&
		/app/venv/bin/pip install -q 'open-webui==$VERSION'"
for m in tmp/host-ca.pem dev/pts dev proc; do umount "$STAGE/$m"; done
rm -f "$STAGE/tmp/host-ca.pem"
: >"$STAGE/etc/resolv.conf"
rm -rf "$STAGE/var/cache/apt/archives"/*.deb "$STAGE/var/lib/apt/lists"/* "$STAGE/root/.cache"
find "$STAGE/app/venv" -name __pycache__ -prune -exec rm -rf {} +
log "rootfs: $(du -sh "$STAGE" | cut -f1)"
step_done

# ---- push: blobs through the registry's HTTP API (no dockerd involved; `docker push`
# would need the image imported into dockerd first, a third copy).
upload_location() {
	local loc
	loc=$(curl -fsS -D - -o /dev/null -X POST "$R/blobs/uploads/" | tr -d '\r' |
		awk 'tolower($1) == "location:" {print $2}')
	[[ -n $loc ]] || die "the registry gave no upload location"
	[[ $loc == http* ]] || loc=http://$REGISTRY$loc
	echo "$loc"
}
with_digest() { # location digest
	if [[ $1 == *\?* ]]; then echo "$1&digest=$2"; else echo "$1?digest=$2"; fi
}
push_blob() { # file sha256-hex
	if blob_exists "sha256:$2"; then
		log "blob sha256:${2:0:12} already in the registry"
		return
	fi
	curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T "$1" \
		"$(with_digest "$(upload_location)" "sha256:$2")" -o /dev/null || die "uploading $1 failed"
}

step "rootfs layer: tar | pigz | registry (streamed)"
mkfifo "$WORK/raw" "$WORK/rawcount" "$WORK/gz"
sha256sum <"$WORK/raw" | cut -d' ' -f1 >"$WORK/raw.sha" &
p_raw=$!
wc -c <"$WORK/rawcount" >"$WORK/raw.bytes" &
p_count=$!
sha256sum <"$WORK/gz" | cut -d' ' -f1 >"$WORK/gz.sha" &
p_gz=$!
loc=$(upload_location)
tar --numeric-owner -C "$STAGE" -cf - . |
	tee "$WORK/raw" "$WORK/rawcount" |
	pigz -3 -p "$(nproc)" |
	tee "$WORK/gz" |
	curl -fsS -X PATCH -H 'Content-Type: application/octet-stream' -T - "$loc" \
		-D "$WORK/patch.headers" -o /dev/null ||
	die "streaming the rootfs layer to the registry failed"
wait "$p_raw" "$p_count" "$p_gz"
ROOTFS_DIFF=sha256:$(<"$WORK/raw.sha")
ROOTFS_BYTES=$(tr -d ' ' <"$WORK/raw.bytes")
ROOTFS_GZ=sha256:$(<"$WORK/gz.sha")
loc=$(tr -d '\r' <"$WORK/patch.headers" | awk 'tolower($1) == "location:" {print $2}' | tail -n 1)
[[ -n $loc ]] || die "the registry gave no location after the upload"
[[ $loc == http* ]] || loc=http://$REGISTRY$loc
curl -fsS -X PUT -H 'Content-Length: 0' "$(with_digest "$loc" "$ROOTFS_GZ")" -o /dev/null ||
	die "completing the rootfs layer upload failed"
ROOTFS_GZ_SIZE=$(curl -fsS -I "$R/blobs/$ROOTFS_GZ" | tr -d '\r' |
	awk 'tolower($1) == "content-length:" {print $2}')
[[ -n $ROOTFS_GZ_SIZE ]] || die "the registry does not report the size of $ROOTFS_GZ"
log "pushed the rootfs layer: $((ROOTFS_BYTES >> 20)) MB as $((ROOTFS_GZ_SIZE >> 20)) MB gzip (${ROOTFS_GZ:0:19})"
# The staging tree is packed: drop it now (7+ GB).
rm -rf --one-file-system "$STAGE"
STAGE=""
step_done

step "start script layer, config, manifest"
mkdir -p "$WORK/start/app"
install -m 755 "$HERE/image/start.sh" "$WORK/start/app/start.sh"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$WORK/start" -cf "$WORK/start.tar" ./app/start.sh
START_DIFF=sha256:$(sha256sum "$WORK/start.tar" | cut -d' ' -f1)
gzip -n -9 -c "$WORK/start.tar" >"$WORK/start.tar.gz"
START_GZ=$(sha256sum "$WORK/start.tar.gz" | cut -d' ' -f1)
push_blob "$WORK/start.tar.gz" "$START_GZ"
jq -n --argjson env "$CONFIG_ENV" --arg rootfs "$ROOTFS_DIFF" --arg start "$START_DIFF" \
	--arg recipe "$RECIPE" --arg version "$VERSION" --arg bytes "$ROOTFS_BYTES" '{
	architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z",
	config: {
		Env: $env,
		Cmd: ["/app/start.sh"],
		WorkingDir: "/app/backend",
		ExposedPorts: {"8080/tcp": {}},
		Labels: {"webui.test.recipe": $recipe, "webui.test.unpacked-bytes": $bytes,
			"org.opencontainers.image.version": $version}
	},
	rootfs: {type: "layers", diff_ids: [$rootfs, $start]},
	history: [
		{created: "1970-01-01T00:00:00Z", created_by: "debootstrap bookworm + pip install open-webui==\($version) (tests/e2e/build-image.sh)"},
		{created: "1970-01-01T00:00:00Z", created_by: "tests/e2e/image/start.sh"}
	]}' >"$WORK/config.json"
CONFIG_SHA=$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
push_blob "$WORK/config.json" "$CONFIG_SHA"
jq -n --arg c "sha256:$CONFIG_SHA" --argjson cs "$(stat -c %s "$WORK/config.json")" \
	--arg l1 "$ROOTFS_GZ" --argjson s1 "$ROOTFS_GZ_SIZE" \
	--arg l2 "sha256:$START_GZ" --argjson s2 "$(stat -c %s "$WORK/start.tar.gz")" '{
	schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
	layers: [
		{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l1, size: $s1},
		{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l2, size: $s2}
	]}' >"$WORK/manifest.json"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
	--data-binary "@$WORK/manifest.json" "$R/manifests/$VERSION" -o /dev/null || die "PUT manifest failed"
step_done

# ---- the previous manifest's blobs: unlinked from the repository, and their files
# deleted when no other repository links them (the registry's own garbage collector
# must not run while other tests push images).
prune_old() {
	[[ -n $OLD_MANIFEST ]] || return 0
	local root d hex new_digests
	root=$(awk '$1 == "rootdirectory:" {print $2}' "$REGISTRY_CONFIG" 2>/dev/null || true)
	new_digests=$(jq -r '.layers[].digest, .config.digest' "$WORK/manifest.json")
	for d in $(jq -r '.layers[].digest, .config.digest' <<<"$OLD_MANIFEST"); do
		grep -qxF "$d" <<<"$new_digests" && continue
		curl -fsS -X DELETE -o /dev/null "$R/blobs/$d" 2>/dev/null || true
		hex=${d#sha256:}
		if [[ -n $root && -d $root/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex ]] &&
			! find "$root/docker/registry/v2/repositories" -path "*/_layers/sha256/$hex/link" | grep -q .; then
			log "removing the previous build's blob ${d:0:19} ($(du -sh "$root/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex" | cut -f1))"
			rm -rf "$root/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex"
		fi
	done
	# run.sh's "<version>-update" variant shared the old layers: drop it (run.sh
	# pushes it again from the new manifest).
	d=$(curl -fsS --max-time 10 -I "${ACCEPT[@]}" "$R/manifests/$VERSION-update" 2>/dev/null | tr -d '\r' |
		awk 'tolower($1) == "docker-content-digest:" {print $2}' || true)
	[[ -z $d ]] || curl -fsS -X DELETE -o /dev/null "$R/manifests/$d" 2>/dev/null || true
	# The old manifest revision (its tag now points at the new one).
	if [[ -n $OLD_DIGEST && $OLD_DIGEST != "sha256:$(sha256sum "$WORK/manifest.json" | cut -d' ' -f1)" ]]; then
		curl -fsS -X DELETE -o /dev/null "$R/manifests/$OLD_DIGEST" 2>/dev/null || true
	fi
}
prune_old

# Tests must exercise a real pull: no local copy.
"$DOCKER" rmi "$IMAGE" >/dev/null 2>&1 || true
log "built $IMAGE (recipe $RECIPE) in $((SECONDS - T0))s; $(free_gb "$CACHE") GB free"
echo "$IMAGE"
