#!/usr/bin/env bash
# Prepare this machine for the webui integration tests. Idempotent: safe on a
# fresh Debian 12 machine and on one where an earlier run left packages,
# images, dockerd, the registry or pebble material behind.
#
#   tests/infra/setup.sh
#
# Result: /var/lib/webui-ci/env (source it) with the WEBUI_TEST_* variables.
#
# Knobs (environment):
#   WEBUI_TEST_STANDIN_BIN  use this binary instead of `cargo build --example standin`
#   WEBUI_TEST_FORCE_IMAGES=1  rebuild and push the test images even if up to date
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE=/var/lib/webui-ci
REGISTRY=127.0.0.1:5000
IMG_OPENWEBUI=webui-test/open-webui
IMG_OLLAMA=webui-test/ollama
PEBBLE_DIR=$STATE/pebble
DOCKERD_LOG=/var/log/webui-ci-dockerd.log
REGISTRY_LOG=/var/log/webui-ci-registry.log
# Bump when the rootfs layout below changes (forces a rebuild of every image).
ROOTFS_RECIPE=2

PACKAGES=(docker.io docker-registry pebble openssl curl ca-certificates iproute2 procps jq binutils nginx apache2 caddy shellcheck debootstrap man-db testssl.sh tmux)
# The e2e suite (tests/e2e): the browser, certutil for its trust store, pigz for the
# real Open WebUI image's layer (dockerd also uses unpigz to pull it).
PACKAGES+=(chromium libnss3-tools pigz)

log() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: ERROR: %s\n' "$*" >&2
	exit 1
}
on_err() {
	local rc=$? line=$1
	printf 'setup: ERROR: command failed (exit %s) at %s line %s: %s\n' \
		"$rc" "${BASH_SOURCE[0]}" "$line" "$BASH_COMMAND" >&2
}
trap 'on_err $LINENO' ERR

SECONDS_START=$SECONDS
step_start=$SECONDS
step() {
	step_start=$SECONDS
	log "== $*"
}
step_done() { log "   done in $((SECONDS - step_start))s"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts dockerd)"
mkdir -p "$STATE"

# ---------------------------------------------------------------- packages
step "packages"
missing=()
for p in "${PACKAGES[@]}"; do
	if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} == 0)); then
	log "all packages present, skipping apt-get (${PACKAGES[*]})"
else
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# No init system here: keep package maintainer scripts from starting
	# services (Debian's docker-registry would grab :5000 with htpasswd auth).
	policy_rc_d=/usr/sbin/policy-rc.d
	created_policy=0
	if [[ ! -e $policy_rc_d ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy_rc_d"
		chmod 755 "$policy_rc_d"
		created_policy=1
	fi
	apt_ok=1
	apt-get update -qq || apt_ok=0
	if ((apt_ok)); then
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/webui-ci-apt.log 2>&1 || apt_ok=0
	fi
	if ((created_policy)); then rm -f "$policy_rc_d"; fi
	if ((!apt_ok)); then
		tail -n 30 /tmp/webui-ci-apt.log >&2 || true
		die "apt-get install failed for: ${missing[*]} (see /tmp/webui-ci-apt.log)"
	fi
fi
step_done

# The engine from docker.io speaks API 1.41; a newer client (e.g. the one in
# /usr/local/bin) negotiates down, but use the matching CLI when we have it.
if [[ -x /usr/bin/docker ]]; then
	DOCKER=/usr/bin/docker
else
	DOCKER=$(command -v docker) || die "no docker CLI found"
fi
docker() { "$DOCKER" "$@"; }

# ---------------------------------------------------------------- dockerd
step "dockerd"
if docker info >/dev/null 2>&1; then
	log "dockerd already answering, skipping start"
else
	if pgrep -x dockerd >/dev/null; then
		log "dockerd process exists but does not answer yet; waiting for it"
	else
		# Stale pid files from a daemon that died with an earlier session.
		rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
		command -v dockerd >/dev/null || die "dockerd binary not found (package docker.io)"
		log "starting dockerd (log: $DOCKERD_LOG)"
		setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
	fi
	deadline=$((SECONDS + 60))
	until docker info >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			tail -n 40 "$DOCKERD_LOG" >&2 || true
			die "dockerd did not answer within 60s (see $DOCKERD_LOG)"
		fi
		sleep 0.5
	done
	log "dockerd is up"
fi
log "docker engine $(docker version -f '{{.Server.Version}} (API {{.Server.APIVersion}})'), CLI $DOCKER"
# tests/swarm.rs makes a one-node swarm and leaves it only when no other container runs
# (leaving drops the embedded-DNS records of running bridge containers), so an earlier
# run may have left the engine in swarm mode. Leave such a swarm here, while nothing
# runs, so every run starts from a plain engine (swarm.rs checks the refusal there).
if [[ $(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]]; then
	if [[ -z $(docker service ls -q 2>/dev/null) && $(docker info -f '{{.Swarm.Nodes}}') == 1 && -z $(docker ps -q) ]]; then
		docker swarm leave --force >/dev/null
		log "left the one-node swarm (no services, no containers) an earlier test run made"
	else
		log "engine is in a swarm with services, other nodes or running containers: left as is"
	fi
fi
step_done

# ---------------------------------------------------------------- registry
step "registry on $REGISTRY"
registry_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$REGISTRY/v2/" || true; }
code=$(registry_code)
if [[ $code == 200 ]]; then
	log "registry already answering, skipping start"
elif [[ $code != 000 ]]; then
	ss -ltnp 'sport = :5000' >&2 || true
	die "something else answers on $REGISTRY (HTTP $code on /v2/); stop it (e.g. Debian's docker-registry service with htpasswd auth)"
else
	mkdir -p "$STATE/registry"
	# Serve a copy so the registry outlives the checkout it was started from.
	cp "$HERE/registry.yml" "$STATE/registry.yml"
	log "starting docker-registry (log: $REGISTRY_LOG)"
	setsid nohup /usr/bin/docker-registry serve "$STATE/registry.yml" >>"$REGISTRY_LOG" 2>&1 </dev/null &
	deadline=$((SECONDS + 30))
	until [[ $(registry_code) == 200 ]]; do
		if ((SECONDS >= deadline)); then
			tail -n 40 "$REGISTRY_LOG" >&2 || true
			die "registry did not answer on http://$REGISTRY/v2/ within 30s (see $REGISTRY_LOG)"
		fi
		sleep 0.3
	done
	log "registry is up"
fi
step_done

# Per image: "repo:tag|role|port|env..." (env as KEY=VALUE words).
IMAGES=(
	"$IMG_OPENWEBUI:v1|openwebui|8080|STANDIN_VERSION=v1"
	"$IMG_OPENWEBUI:v2|openwebui|8080|STANDIN_VERSION=v2"
	"$IMG_OPENWEBUI:broken|openwebui|8080|STANDIN_VERSION=broken STANDIN_NEVER_HEALTHY=1"
	"$IMG_OPENWEBUI:crashloop|openwebui|8080|STANDIN_VERSION=crashloop STANDIN_EXIT_AFTER_SECS=2"
	"$IMG_OPENWEBUI:slowstart|openwebui|8080|STANDIN_VERSION=slowstart STANDIN_HEALTH_DELAY_SECS=5"
	"$IMG_OLLAMA:latest|ollama|11434|STANDIN_VERSION=latest DATA_DIR=/root/.ollama"
	# The e2e's model: tokens 300 ms apart, so the browser sees the answer grow.
	"$IMG_OLLAMA:slow|ollama|11434|STANDIN_VERSION=latest DATA_DIR=/root/.ollama STANDIN_TOKEN_DELAY_MS=300"
)

# Prints the config blob (JSON) of repo:tag in the registry, fails if absent.
remote_config() {
	local repo=${1%:*} tag=${1##*:} manifest digest
	manifest=$(curl -fsS --max-time 10 \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$REGISTRY/v2/$repo/manifests/$tag" 2>/dev/null) || return 1
	digest=$(jq -r '.config.digest // empty' <<<"$manifest") || return 1
	[[ -n $digest ]] || return 1
	curl -fsSL --max-time 10 "http://$REGISTRY/v2/$repo/blobs/$digest" 2>/dev/null
}

all_images_present() {
	local spec
	for spec in "${IMAGES[@]}"; do
		remote_config "${spec%%|*}" >/dev/null || return 1
	done
}

# ---------------------------------------------------------------- standin binary
step "stand-in binary"
if [[ -n ${WEBUI_TEST_STANDIN_BIN:-} ]]; then
	STANDIN=$WEBUI_TEST_STANDIN_BIN
	[[ -x $STANDIN ]] || die "WEBUI_TEST_STANDIN_BIN=$STANDIN is not an executable file"
	log "using WEBUI_TEST_STANDIN_BIN=$STANDIN (not building)"
else
	cargo_args=(build --example standin --message-format=json-render-diagnostics)
	[[ ${CI:-} == true ]] && cargo_args+=(--locked)
	log "cargo ${cargo_args[*]}"
	if cargo_out=$(cd "$ROOT" && cargo "${cargo_args[@]}"); then
		STANDIN=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "standin"
	                        and (.target.kind | index("example"))) | .executable // empty' \
			<<<"$cargo_out" | tail -n 1)
		[[ -n $STANDIN && -x $STANDIN ]] || die "could not find the built standin executable in cargo's output"
		log "built $STANDIN"
	elif [[ ${CI:-} != true ]] && all_images_present; then
		# Developer convenience: a half-edited src/ breaks the example's build
		# (it links the webui lib); keep testing against what was pushed last.
		log "WARNING: cargo build --example standin failed (errors above; the example also"
		log "WARNING: compiles the webui lib); keeping the images already in $REGISTRY"
		STANDIN=""
	else
		die "cargo build --example standin failed (errors above; note the example also compiles the webui lib in src/)"
	fi
fi
if [[ -n $STANDIN ]]; then
	BINSHA=$(sha256sum "$STANDIN" | cut -d' ' -f1)
	log "standin sha256 $BINSHA ($(du -h "$STANDIN" | cut -f1))"
else
	BINSHA=$(remote_config "${IMAGES[0]%%|*}" | jq -r '.config.Labels["webui.test.binsha"] // empty')
fi
step_done

# ---------------------------------------------------------------- test images
step "test images in $REGISTRY"

# Fills CHANGES (docker import --change args, labels excluded) for one spec.
image_changes() {
	local role=$1 port=$2 envs=$3 workdir
	CHANGES=()
	if [[ $role == ollama ]]; then workdir=/root; else workdir=/app/backend; fi
	CHANGES+=(--change 'CMD ["/standin"]')
	CHANGES+=(--change "WORKDIR $workdir")
	CHANGES+=(--change "EXPOSE $port")
	CHANGES+=(--change "ENV PORT=$port")
	CHANGES+=(--change "ENV STANDIN_ROLE=$role")
	local kv
	for kv in $envs; do CHANGES+=(--change "ENV $kv"); done
}

ROOTFS_TAR=$STATE/standin-rootfs.tar
ROOTFS_KEY=$STATE/standin-rootfs.key
rootfs_key="$BINSHA recipe=$ROOTFS_RECIPE"
rootfs_ready=0

build_rootfs() {
	((rootfs_ready)) && return
	rootfs_ready=1
	if [[ -f $ROOTFS_TAR && -f $ROOTFS_KEY && $(<"$ROOTFS_KEY") == "$rootfs_key" ]]; then
		log "rootfs tarball cached ($ROOTFS_TAR), skipping rebuild"
		return
	fi
	log "building rootfs tarball"
	local stage lib
	stage=$(mktemp -d /tmp/webui-ci-rootfs.XXXXXX)
	mkdir -p "$stage"/{etc,tmp,var/tmp,root/.ollama,app/backend/data,proc,sys,dev}
	chmod 1777 "$stage/tmp" "$stage/var/tmp"
	cp "$STANDIN" "$stage/standin"
	chmod 755 "$stage/standin"
	# Invoked as curl the stand-in is a minimal curl, as the real image has one.
	mkdir -p "$stage/usr/bin"
	ln -s /standin "$stage/usr/bin/curl"
	# Shared libraries and the dynamic loader, at the paths ldd reports.
	local ldd_out
	if ldd_out=$(ldd "$STANDIN" 2>&1); then
		while read -r lib; do
			[[ -n $lib ]] || continue
			mkdir -p "$stage$(dirname "$lib")"
			cp -L "$lib" "$stage$lib"
		done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$ldd_out" | sort -u)
	else
		log "ldd: $ldd_out (assuming a static binary)"
	fi
	cat >"$stage/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/sbin/nologin
		nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
	EOF
	cat >"$stage/etc/group" <<-'EOF'
		root:x:0:
		nogroup:x:65534:
	EOF
	printf 'hosts: files dns\n' >"$stage/etc/nsswitch.conf"
	touch "$stage/etc/hosts" "$stage/etc/resolv.conf" "$stage/etc/hostname"
	# Deterministic tar: same binary => same layer digest.
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		-C "$stage" -cf "$ROOTFS_TAR.tmp" .
	rm -rf "$stage"
	mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
	printf '%s' "$rootfs_key" >"$ROOTFS_KEY"
	log "rootfs tarball $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

built=0
skipped=0
for spec in "${IMAGES[@]}"; do
	IFS='|' read -r ref role port envs <<<"$spec"
	image_changes "$role" "$port" "$envs"
	spechash=$(printf '%s\n' "recipe=$ROOTFS_RECIPE" "${CHANGES[@]}" | sha256sum | cut -c1-16)
	full=$REGISTRY/$ref
	if [[ -z $STANDIN ]]; then
		log "$full kept as is (no fresh standin build)"
		skipped=$((skipped + 1))
		continue
	fi
	if [[ ${WEBUI_TEST_FORCE_IMAGES:-} != 1 ]] && cfg=$(remote_config "$ref") &&
		[[ $(jq -r '.config.Labels["webui.test.binsha"] // empty' <<<"$cfg") == "$BINSHA" &&
		$(jq -r '.config.Labels["webui.test.spec"] // empty' <<<"$cfg") == "$spechash" ]]; then
		log "$full is up to date, skipping"
		skipped=$((skipped + 1))
		continue
	fi
	build_rootfs
	log "importing and pushing $full"
	docker import \
		"${CHANGES[@]}" \
		--change "LABEL webui.test.binsha=$BINSHA" \
		--change "LABEL webui.test.spec=$spechash" \
		"$ROOTFS_TAR" "$full" >/dev/null
	if ! push_out=$(docker push "$full" 2>&1); then
		printf '%s\n' "$push_out" >&2
		die "docker push $full failed"
	fi
	built=$((built + 1))
done
# Tests must exercise a real pull from the registry: drop local copies.
for spec in "${IMAGES[@]}"; do
	ref=$REGISTRY/${spec%%|*}
	if docker image inspect "$ref" >/dev/null 2>&1; then
		docker rmi "$ref" >/dev/null 2>&1 || log "note: could not remove local $ref (in use by a container?)"
	fi
done
log "images: $built built+pushed, $skipped up to date"
step_done

# ---------------------------------------------------------------- postgres, redis
step "postgres and redis test images (tests/infra/db-images.sh)"
DB_IMAGES_ENV=$(WEBUI_TEST_REGISTRY=$REGISTRY WEBUI_TEST_DOCKER_CLI=$DOCKER bash "$HERE/db-images.sh") ||
	die "tests/infra/db-images.sh failed (errors above)"
step_done

# ---------------------------------------------------------------- pebble
step "pebble material in $PEBBLE_DIR"
PEBBLE_BIN=$(command -v pebble || true)
[[ -n $PEBBLE_BIN ]] || PEBBLE_BIN=$(dpkg -L pebble 2>/dev/null | grep -m1 '/bin/pebble$' || true)
[[ -n $PEBBLE_BIN && -x $PEBBLE_BIN ]] || die "pebble binary not found (package pebble)"
CHALLTESTSRV_BIN=$(command -v pebble-challtestsrv || true)
mkdir -p "$PEBBLE_DIR"
ca_key=$PEBBLE_DIR/ca.key
ca_pem=$PEBBLE_DIR/ca.pem
leaf_key=$PEBBLE_DIR/localhost.key
leaf_pem=$PEBBLE_DIR/localhost.pem
if [[ -s $ca_pem && -s $ca_key ]] && openssl x509 -in "$ca_pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1; then
	log "pebble listener CA present, skipping"
else
	log "generating pebble listener CA"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$ca_key" -out "$ca_pem" -days 3650 -subj "/CN=webui-ci pebble listener CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	rm -f "$leaf_pem" # re-issue the leaf under the new CA
fi
if [[ -s $leaf_pem && -s $leaf_key ]] &&
	openssl verify -CAfile "$ca_pem" "$leaf_pem" >/dev/null 2>&1 &&
	openssl x509 -in "$leaf_pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1; then
	log "pebble listener certificate present, skipping"
else
	log "generating pebble listener certificate for localhost/127.0.0.1/::1"
	ext=$(mktemp)
	cat >"$ext" <<-'EOF'
		basicConstraints=critical,CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth
		subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
	EOF
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$leaf_key" -out "$PEBBLE_DIR/localhost.csr" -subj "/CN=localhost" 2>/dev/null
	openssl x509 -req -in "$PEBBLE_DIR/localhost.csr" -CA "$ca_pem" -CAkey "$ca_key" \
		-CAcreateserial -days 825 -extfile "$ext" -out "$leaf_pem" 2>/dev/null
	rm -f "$ext" "$PEBBLE_DIR/localhost.csr"
fi
chmod 600 "$ca_key" "$leaf_key"
cat >"$PEBBLE_DIR/pebble-config.json.tmp" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:14000",
    "managementListenAddress": "127.0.0.1:15000",
    "certificate": "$leaf_pem",
    "privateKey": "$leaf_key",
    "httpPort": 5002,
    "tlsPort": 5001,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
mv "$PEBBLE_DIR/pebble-config.json.tmp" "$PEBBLE_DIR/pebble-config.json"
log "pebble: $PEBBLE_BIN, challtestsrv: ${CHALLTESTSRV_BIN:-absent}"
step_done

# ---------------------------------------------------------------- e2e browser driver
step "e2e: node, npm, playwright-core (tests/e2e)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	log "installing nodejs npm"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || true
	apt-get install -y -qq --no-install-recommends nodejs npm >/tmp/webui-ci-apt.log 2>&1 || {
		tail -n 30 /tmp/webui-ci-apt.log >&2 || true
		die "apt-get install nodejs npm failed (see /tmp/webui-ci-apt.log)"
	}
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || die "node $(node --version) is too old for playwright-core (needs 18 or later)"
E2E_DIR=$ROOT/tests/e2e
want=$(jq -r '.packages["node_modules/playwright-core"].version' "$E2E_DIR/package-lock.json")
have=$(jq -r .version "$E2E_DIR/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [[ $want == "$have" ]]; then
	log "playwright-core $have present in tests/e2e/node_modules, skipping npm ci"
else
	log "npm ci in tests/e2e (playwright-core $want; no browser download: Debian's chromium is used)"
	(cd "$E2E_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $E2E_DIR failed"
fi
log "node $(node --version), npm $(npm --version), $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: absent')"
step_done

# ---------------------------------------------------------------- cargo-fuzz
# tests/fuzz.rs runs the fuzz targets in fuzz/ (stable toolchain + RUSTC_BOOTSTRAP=1).
step "cargo-fuzz (tests/fuzz.rs)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if cargo fuzz --version >/dev/null 2>&1; then
	log "$(cargo fuzz --version) present, skipping cargo install"
else
	log "cargo install cargo-fuzz --locked (a few minutes, once per machine)"
	cargo install cargo-fuzz --locked >/tmp/webui-ci-cargo-fuzz.log 2>&1 || {
		tail -n 30 /tmp/webui-ci-cargo-fuzz.log >&2 || true
		die "cargo install cargo-fuzz failed (see /tmp/webui-ci-cargo-fuzz.log)"
	}
fi
step_done

# ---------------------------------------------------------------- env file
step "env file"
cat >"$STATE/env.tmp" <<EOF
# Written by tests/infra/setup.sh; source this file.
export WEBUI_TEST_REGISTRY=$REGISTRY
export WEBUI_TEST_OPENWEBUI_IMAGE=$REGISTRY/$IMG_OPENWEBUI
export WEBUI_TEST_OLLAMA_IMAGE=$REGISTRY/$IMG_OLLAMA:latest
export WEBUI_TEST_OLLAMA_SLOW_IMAGE=$REGISTRY/$IMG_OLLAMA:slow
export WEBUI_TEST_STANDIN_SHA256=$BINSHA
export WEBUI_TEST_PEBBLE_DIR=$PEBBLE_DIR
export WEBUI_TEST_PEBBLE_BIN=$PEBBLE_BIN
export WEBUI_TEST_PEBBLE_CONFIG=$PEBBLE_DIR/pebble-config.json
export WEBUI_TEST_PEBBLE_LISTENER_CA=$ca_pem
export WEBUI_TEST_PEBBLE_LISTENER_CERT=$leaf_pem
export WEBUI_TEST_PEBBLE_LISTENER_KEY=$leaf_key
export WEBUI_TEST_CHALLTESTSRV_BIN=${CHALLTESTSRV_BIN}
export WEBUI_TEST_DOCKER_CLI=$DOCKER
$DB_IMAGES_ENV
EOF
mv "$STATE/env.tmp" "$STATE/env"
log "wrote $STATE/env"
step_done

log "all done in $((SECONDS - SECONDS_START))s"
