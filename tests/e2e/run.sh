#!/usr/bin/env bash
# End-to-end: the real Open WebUI image (tests/e2e/build-image.sh), a real ACME flow
# (pebble + pebble-challtestsrv), the bundled-Ollama stand-in as the model server
# (tokens 300 ms apart: image webui-test/ollama:slow), and a real browser (Debian's
# chromium, headless, driven by playwright-core) through webui's HTTPS + WebSocket
# proxy, with a scheduled backup of the real database (`--backup-every`: SQLite's online
# copy, checked to open); then `webui update` to the same Open WebUI version (a new image id) and the
# browser again; then `webui migrate-db --to postgres` of this install (migrate.sh) and a
# 3-replica site on Postgres + Redis (scale.sh). Run by tests/e2e.rs (`cargo test --test
# e2e`) and .ci/e2e.
#
#   tests/e2e/run.sh [IMAGE]     # default: 127.0.0.1:5000/webui-test/open-webui-real:<ver>
#
# Needs root, dockerd, the local registry and pebble (tests/infra/setup.sh), chromium,
# libnss3-tools (certutil), node + npm with tests/e2e/node_modules. Everything it
# starts (project t-e2e: its containers, network and volumes; pebble; webui;
# chromium; the pulled image) is removed on exit. Screenshots and logs of a failure
# land in tests/e2e/artifacts/.
#
# Exit codes: 0 passed, 1 failed, 3 not enough disk space to pull the image.
# Knobs: WEBUI_BIN (default: `cargo build` and use target/debug/webui),
#        WEBUI_E2E_KEEP=1 (leave everything running for a look; prints how to clean),
#        WEBUI_E2E_KEEP_IMAGE=1 (do not remove the local image first: no real pull),
#        WEBUI_E2E_DISK_RESERVE_GB (free space to leave after the pull, default 3),
#        E2E_MIN_STATES (growing DOM states the answer must show, default 3).
set -euo pipefail

export PATH="${HOME:-/root}/.cargo/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENV_FILE=/var/lib/webui-ci/env
# shellcheck disable=SC1090
[[ -f $ENV_FILE ]] && source "$ENV_FILE"
VERSION=${OPENWEBUI_VERSION:-0.12.4}
IMAGE=${1:-${WEBUI_TEST_REGISTRY:-127.0.0.1:5000}/webui-test/open-webui-real:$VERSION}
OLLAMA_IMAGE=${WEBUI_TEST_OLLAMA_SLOW_IMAGE:-127.0.0.1:5000/webui-test/ollama:slow}
# The same Open WebUI under another image id (one more label), for `webui update`.
UPDATE_IMAGE=${IMAGE%:*}:${IMAGE##*:}-update
PROJECT=t-e2e
DOMAIN=e2e.webui.test
DOCKER=${WEBUI_TEST_DOCKER_CLI:-/usr/bin/docker}
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
ARTIFACTS=$HERE/artifacts
WORK=$(mktemp -d /tmp/webui-e2e.XXXXXX)
STATE=$WORK/state

T0=$SECONDS
STEPS=()
step_name=""
step_t=0
log() { printf 'e2e: %s\n' "$*"; }
die() {
	printf 'e2e: FAILED: %s\n' "$*" >&2
	exit 1
}
step() {
	step_name=$1
	step_t=$SECONDS
	printf '\n=== e2e: %s\n' "$step_name"
}
step_done() {
	STEPS+=("$(printf '%-58s %5ss' "$step_name" "$((SECONDS - step_t))")")
	step_name=""
}

PIDS=()
WEBUI_PID=""
WEBUI_LOG=""
cleanup_project() {
	local c n v
	for c in $("$DOCKER" ps -a --format '{{.Names}}' | grep "^$PROJECT-" || true); do
		"$DOCKER" rm -f "$c" >/dev/null 2>&1 || true
	done
	for n in $("$DOCKER" network ls --format '{{.Name}}' | grep "^$PROJECT-" || true); do
		"$DOCKER" network rm "$n" >/dev/null 2>&1 || true
	done
	for v in $("$DOCKER" volume ls --format '{{.Name}}' | grep "^$PROJECT-" || true); do
		"$DOCKER" volume rm -f "$v" >/dev/null 2>&1 || true
	done
}
stop_webui() {
	[[ -n $WEBUI_PID ]] || return 0
	if kill -0 "$WEBUI_PID" 2>/dev/null; then
		kill -TERM "$WEBUI_PID" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$WEBUI_PID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$WEBUI_PID" 2>/dev/null || true
	fi
	wait "$WEBUI_PID" 2>/dev/null || true
	WEBUI_PID=""
}
on_exit() {
	local rc=$?
	if [[ -n $step_name ]]; then
		STEPS+=("$(printf '%-58s %5ss  FAILED' "$step_name" "$((SECONDS - step_t))")")
	fi
	# Logs are kept in any case (small); screenshots come with a browser failure.
	mkdir -p "$ARTIFACTS"
	cp "$WORK"/*.log "$ARTIFACTS/" 2>/dev/null || true
	"$DOCKER" logs --tail 300 "$PROJECT-open-webui" >"$ARTIFACTS/open-webui.log" 2>&1 || true
	if ((rc != 0)); then
		log "logs and screenshots in $ARTIFACTS/"
		if [[ -n $WEBUI_LOG && -f $WEBUI_LOG ]]; then
			log "last lines of webui's output ($(basename "$WEBUI_LOG")):"
			tail -n 25 "$WEBUI_LOG" | sed 's/^/    /' >&2
		fi
	fi
	if [[ ${WEBUI_E2E_KEEP:-} == 1 ]]; then
		log "WEBUI_E2E_KEEP=1: leaving webui (pid $WEBUI_PID), pebble (${PIDS[*]}), project $PROJECT and $WORK"
	else
		printf '\n=== e2e: cleanup\n'
		stop_webui
		local p
		for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
		for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
		# A chromium left by a crashed driver: only ours (its profile is in $WORK).
		for p in $(pgrep -f -- "--user-data-dir=$WORK/profile" || true); do kill "$p" 2>/dev/null || true; done
		cleanup_project
		# The pulled image is 7+ GB; the next run pulls it again anyway.
		if [[ ${WEBUI_E2E_KEEP_IMAGE:-} != 1 ]]; then "$DOCKER" rmi "$IMAGE" "$UPDATE_IMAGE" >/dev/null 2>&1 || true; fi
		rm -rf "$WORK"
	fi
	printf '\n=== e2e: steps\n'
	printf '  %s\n' "${STEPS[@]}"
	printf '=== e2e: total %ss, %s\n' "$((SECONDS - T0))" "$([[ $rc == 0 ]] && echo PASSED || echo "FAILED (exit $rc)")"
	exit "$rc"
}
trap on_exit EXIT
trap 'printf "e2e: FAILED: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# A free loopback port in 20000-29999 (below the ephemeral range, like the Rust tests).
USED_PORTS=" "
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 10000))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if ! ss -Hltn "sport = :$p" | grep -q .; then
			USED_PORTS+="$p "
			echo "$p"
			return
		fi
	done
}
wait_port() { # port timeout_s
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		(: </dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (docker)"
for tool in "$DOCKER" jq curl ss certutil node npm; do
	command -v "$tool" >/dev/null || die "$tool not found (tests/infra/setup.sh installs the e2e packages)"
done
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium not found (apt-get install chromium)"
"$DOCKER" info >/dev/null 2>&1 || die "dockerd does not answer (bash tests/infra/setup.sh)"
rm -rf "$ARTIFACTS"
mkdir -p "$STATE"
cleanup_project

# ------------------------------------------------------------------ tools
step "webui binary and browser driver"
if [[ -n ${WEBUI_BIN:-} ]]; then
	log "using WEBUI_BIN=$WEBUI_BIN"
else
	cargo_args=(build --bin webui)
	[[ ${CI:-} == true ]] && cargo_args+=(--locked)
	(cd "$ROOT" && cargo "${cargo_args[@]}")
	WEBUI_BIN=$ROOT/target/debug/webui
fi
# A private copy: a rebuild of the tree during the run must not swap it.
cp "$WEBUI_BIN" "$WORK/webui"
WEBUI_BIN=$WORK/webui
want=$(jq -r '.packages["node_modules/playwright-core"].version' "$HERE/package-lock.json")
have=$(jq -r .version "$HERE/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [[ $want != "$have" ]]; then
	(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi
step_done

webui() { "$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" "$@"; }

# ------------------------------------------------------------------ pebble
step "pebble + pebble-challtestsrv"
HTTPS_PORT=$(free_port)
HTTP_PORT=$(free_port)
APP_PORT=$(free_port)
DNS_PORT=$(free_port)
DNS_MGMT=$(free_port)
ACME_PORT=$(free_port)
ACME_MGMT=$(free_port)
PEBBLE_DIR=${WEBUI_TEST_PEBBLE_DIR:-/var/lib/webui-ci/pebble}
PEBBLE_CA=${WEBUI_TEST_PEBBLE_LISTENER_CA:-$PEBBLE_DIR/ca.pem}
"${WEBUI_TEST_CHALLTESTSRV_BIN:-/usr/bin/pebble-challtestsrv}" \
	-dns01 "127.0.0.1:$DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
	-management "127.0.0.1:$DNS_MGMT" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
	>"$WORK/challtestsrv.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/pebble.json" <<JSON
{"pebble": {
  "listenAddress": "127.0.0.1:$ACME_PORT",
  "managementListenAddress": "127.0.0.1:$ACME_MGMT",
  "certificate": "${WEBUI_TEST_PEBBLE_LISTENER_CERT:-$PEBBLE_DIR/localhost.pem}",
  "privateKey": "${WEBUI_TEST_PEBBLE_LISTENER_KEY:-$PEBBLE_DIR/localhost.key}",
  "httpPort": $HTTP_PORT, "tlsPort": $HTTPS_PORT,
  "ocspResponderURL": "", "externalAccountBindingRequired": false
}}
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
	"${WEBUI_TEST_PEBBLE_BIN:-/usr/bin/pebble}" -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$DNS_PORT" \
	>"$WORK/pebble.log" 2>&1 &
PIDS+=($!)
wait_port "$ACME_PORT" 20 || die "pebble did not listen on $ACME_PORT (see pebble.log)"
wait_port "$DNS_MGMT" 20 || die "pebble-challtestsrv did not start"
log "pebble: https://127.0.0.1:$ACME_PORT/dir (validates on :$HTTP_PORT / :$HTTPS_PORT)"
step_done

# ------------------------------------------------------------------ webui up
UP_ARGS=(up --domain "$DOMAIN" --email admin@webui.test
	--acme-directory "https://127.0.0.1:$ACME_PORT/dir" --acme-ca "$PEBBLE_CA"
	--challenge http-01 --skip-preflight
	--listen "127.0.0.1:$HTTPS_PORT" --http-listen "127.0.0.1:$HTTP_PORT"
	--image "$IMAGE" --port "$APP_PORT"
	--ollama --ollama-image "$OLLAMA_IMAGE"
	--health-timeout 15m
	--backup-every 1h --backup-dir "$WORK/scheduled")
# The admin: created by `webui up --admin-email` (password from WEBUI_ADMIN_PASSWORD)
# when this webui has the flag; else the browser signs up as the first user.
export E2E_ADMIN_EMAIL=e2e-admin@example.test E2E_ADMIN_PASSWORD='e2e-Passw0rd!'
if "$WEBUI_BIN" up --help 2>/dev/null | grep -q -- '--admin-email'; then
	UP_ARGS+=(--admin-email "$E2E_ADMIN_EMAIL")
	export WEBUI_ADMIN_PASSWORD=$E2E_ADMIN_PASSWORD E2E_ADMIN_MODE=login
	log "admin: made by webui up --admin-email $E2E_ADMIN_EMAIL; the browser logs in"
else
	export E2E_ADMIN_MODE=signup
	log "admin: webui up has no --admin-email; the browser signs up as the first user"
fi
start_webui() { # log-name extra-args...
	WEBUI_LOG=$WORK/$1.log
	shift
	: >"$WEBUI_LOG"
	# The binary itself in the background (not the shell function: $! must be its pid).
	"$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" "${UP_ARGS[@]}" "$@" >>"$WEBUI_LOG" 2>&1 &
	WEBUI_PID=$!
}
wait_ready() { # timeout_s
	local deadline=$((SECONDS + $1))
	until grep -q "Open WebUI is ready at" "$WEBUI_LOG"; do
		kill -0 "$WEBUI_PID" 2>/dev/null || die "webui up exited: $(tail -n 20 "$WEBUI_LOG")"
		((SECONDS < deadline)) || die "Open WebUI not ready within $1s"
		sleep 1
	done
}

# $UPDATE_IMAGE: $IMAGE's manifest with a config that has one more label, pushed
# under another tag (a few KB: the layers are shared). A new image id with the same
# Open WebUI, so `webui update` recreates the container.
push_update_variant() {
	local r=http://${IMAGE%%/*}/v2 repo=${IMAGE#*/} manifest cfg_digest cfg sha loc sep
	repo=${repo%:*}
	manifest=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$r/$repo/manifests/${IMAGE##*:}")
	cfg_digest=$(jq -r .config.digest <<<"$manifest")
	curl -fsS "$r/$repo/blobs/$cfg_digest" | jq -c '.config.Labels["webui.test.variant"] = "update"' >"$WORK/update-config.json"
	sha=sha256:$(sha256sum "$WORK/update-config.json" | cut -d' ' -f1)
	if ! curl -fsS -o /dev/null -I "$r/$repo/blobs/$sha" 2>/dev/null; then
		loc=$(curl -fsS -D - -o /dev/null -X POST "$r/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
		[[ $loc == http* ]] || loc=http://${IMAGE%%/*}$loc
		if [[ $loc == *\?* ]]; then sep='&'; else sep='?'; fi
		curl -fsS -X PUT -T "$WORK/update-config.json" "$loc${sep}digest=$sha" -o /dev/null
	fi
	jq --arg d "$sha" --argjson s "$(stat -c %s "$WORK/update-config.json")" '.config.digest = $d | .config.size = $s' \
		<<<"$manifest" >"$WORK/update-manifest.json"
	curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
		--data-binary "@$WORK/update-manifest.json" "$r/$repo/manifests/${UPDATE_IMAGE##*:}" -o /dev/null
	log "pushed $UPDATE_IMAGE (same layers, config ${sha:0:19})"
}

step "webui up: pull the real image from the registry, create, wait for /health"
if [[ ${WEBUI_E2E_KEEP_IMAGE:-} != 1 ]]; then
	# make `up` pull it for real
	"$DOCKER" rmi "$IMAGE" "$UPDATE_IMAGE" >/dev/null 2>&1 || true
fi
# A pull needs the compressed layers (dockerd keeps the download until it is
# extracted) plus the unpacked image, for a moment both.
if ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
	manifest=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://${IMAGE%%/*}/v2/$(sed 's|^[^/]*/||; s|:[^:]*$||' <<<"$IMAGE")/manifests/${IMAGE##*:}") ||
		die "$IMAGE is not in the registry (bash tests/e2e/build-image.sh builds it)"
	packed=$(jq '[.layers[].size] | add' <<<"$manifest")
	unpacked=$(curl -fsS "http://${IMAGE%%/*}/v2/$(sed 's|^[^/]*/||; s|:[^:]*$||' <<<"$IMAGE")/blobs/$(jq -r .config.digest <<<"$manifest")" |
		jq -r '.config.Labels["webui.test.unpacked-bytes"] // "8000000000"')
	droot=$("$DOCKER" info -f '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)
	free_gb=$(($(df --output=avail -k "$droot" | tail -n 1) / 1048576))
	need_gb=$(((packed + unpacked) / 1073741824 + 1 + ${WEBUI_E2E_DISK_RESERVE_GB:-3}))
	if ((free_gb < need_gb)); then
		printf 'e2e: FAILED: only %s GB free under %s; pulling %s needs about %s GB (%s MB download + %s MB unpacked + %s GB reserve)\n' \
			"$free_gb" "$droot" "$IMAGE" "$need_gb" "$((packed >> 20))" "$((unpacked >> 20))" "${WEBUI_E2E_DISK_RESERVE_GB:-3}" >&2
		exit 3
	fi
	log "disk: $free_gb GB free under $droot, the pull needs about $need_gb GB"
fi
start_webui webui-up1
wait_ready 900
if [[ ${WEBUI_E2E_KEEP_IMAGE:-} != 1 ]]; then
	grep -q "^pulled $IMAGE" "$WEBUI_LOG" || die "webui up did not report pulling $IMAGE"
	log "$(grep -m1 "^pulled $IMAGE" "$WEBUI_LOG")"
fi
log "$(grep -m1 "Open WebUI is ready at" "$WEBUI_LOG")"
step_done

step "ACME: certificate from pebble served for $DOMAIN"
ROOT_PEM=$WORK/pebble-root.pem
curl -fsS --cacert "$PEBBLE_CA" "https://127.0.0.1:$ACME_MGMT/roots/0" >"$ROOT_PEM"
CURL=(curl -sS --cacert "$ROOT_PEM" --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" --max-time 10)
deadline=$((SECONDS + 120))
until "${CURL[@]}" -fo /dev/null "https://$DOMAIN:$HTTPS_PORT/health" 2>/dev/null; do
	((SECONDS < deadline)) || die "no pebble-issued certificate for $DOMAIN within 120s"
	sleep 1
done
issuer=$(openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "$DOMAIN" </dev/null 2>/dev/null |
	openssl x509 -noout -issuer 2>/dev/null || true)
log "served certificate verifies against pebble's root ($issuer)"
health=$("${CURL[@]}" "https://$DOMAIN:$HTTPS_PORT/health")
log "/health through the proxy: $health"
# (a pip install reports version 0.0.0: the version comes from the source tree's
# package.json; the image label says which release it is)
cfg=$("${CURL[@]}" "https://$DOMAIN:$HTTPS_PORT/api/config")
jq -e '.name == "Open WebUI" and .features.enable_websocket' <<<"$cfg" >/dev/null ||
	die "/api/config does not look like Open WebUI's: $cfg"
log "Open WebUI $("$DOCKER" inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$PROJECT-open-webui") answers /api/config (websocket enabled)"
step_done

step "only the proxy listens beyond loopback"
bindings=$("$DOCKER" inspect -f '{{json .HostConfig.PortBindings}}' "$PROJECT-open-webui")
log "open-webui port bindings: $bindings"
jq -e '[.[]?[]?.HostIp] | length > 0 and all(. == "127.0.0.1")' <<<"$bindings" >/dev/null ||
	die "open-webui is published beyond loopback: $bindings"
ob=$("$DOCKER" inspect -f '{{json .HostConfig.PortBindings}}' "$PROJECT-ollama")
[[ $ob == "{}" || $ob == "null" ]] || die "ollama is published: $ob"
pub=$("$DOCKER" inspect -f '{{json .NetworkSettings.Ports}}' "$PROJECT-open-webui" "$PROJECT-ollama")
jq -e -s '[.[] | to_entries[] | .value // [] | .[] | .HostIp] | all(. == "127.0.0.1")' <<<"$pub" >/dev/null ||
	die "a container port is published beyond loopback: $pub"
# webui's own listeners are the ones given (loopback in this test).
webui_listen=$(ss -Hltnp | grep "pid=$WEBUI_PID," | awk '{print $4}' | sort | tr '\n' ' ' || true)
[[ -n $webui_listen ]] || die "found no listening socket of webui (pid $WEBUI_PID)"
if grep -v -q -E '^(127\.0\.0\.1|\[::1\]):' <<<"$(tr ' ' '\n' <<<"$webui_listen" | sed '/^$/d')"; then
	die "webui listens beyond what it was given (loopback): $webui_listen"
fi
log "webui listens on: $webui_listen"
# Every socket listening beyond loopback on this host: none may be webui's or a
# docker-proxy for one of the project's containers (other processes are listed).
ips=$("$DOCKER" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$PROJECT-open-webui" "$PROJECT-ollama" | tr -s ' \n' ' ')
others=()
while read -r line; do
	[[ -n $line ]] || continue
	addr=$(awk '{print $4}' <<<"$line")
	pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -n 1 | cut -d= -f2 || true)
	[[ $pid == "$WEBUI_PID" ]] && die "webui listens beyond loopback: $line"
	if [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q docker-proxy; then
		for ip in $ips; do
			tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-container-ip $ip " &&
				die "a port of the project's containers is published beyond loopback: $line"
		done
	fi
	others+=("$addr($(grep -o 'users:(("[^"]*"' <<<"$line" | cut -d'"' -f2 || true))")
done < <(ss -Hltnp | awk '$4 !~ /^(127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):[0-9]+$/')
log "listening beyond loopback on this host, none of them ours: ${others[*]:-none}"
step_done

step "scheduled backup of the real Open WebUI: SQLite online copy, a database that opens"
deadline=$((SECONDS + 180))
until grep -q "^scheduled backup written: " "$WEBUI_LOG"; do
	kill -0 "$WEBUI_PID" 2>/dev/null || die "webui up exited: $(tail -n 20 "$WEBUI_LOG")"
	grep -q "scheduled backup failed" "$WEBUI_LOG" && die "$(grep -m1 "scheduled backup failed" "$WEBUI_LOG")"
	((SECONDS < deadline)) || die "no scheduled backup within 180s of the start"
	sleep 1
done
archive=$(grep -m1 "^scheduled backup written: " "$WEBUI_LOG" | sed 's/^scheduled backup written: //; s/ (removed.*//')
[[ -f $archive && $(dirname "$archive") == "$WORK/scheduled" ]] || die "no archive at $archive"
grep -q "database copied with SQLite's online backup" "$WEBUI_LOG" ||
	die "the backup did not use SQLite's online backup: $(grep -m1 "^backed up" "$WEBUI_LOG")"
tar -xzOf "$archive" data/webui.db >"$WORK/backup-webui.db" || die "no data/webui.db in $archive"
# Opened with the image's own python3 and sqlite3 (the host needs neither).
"$DOCKER" cp "$WORK/backup-webui.db" "$PROJECT-open-webui:/tmp/backup-check.db" >/dev/null
users=$("$DOCKER" exec "$PROJECT-open-webui" python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute("pragma integrity_check").fetchone()[0], c.execute("select count(*) from user").fetchone()[0])' /tmp/backup-check.db) ||
	die "the database in the backup does not open"
"$DOCKER" exec "$PROJECT-open-webui" rm -f /tmp/backup-check.db
[[ $users == "ok "* ]] || die "integrity check of the backed-up database: $users"
log "$(basename "$archive"): $(grep -m1 "^backed up" "$WEBUI_LOG"); webui.db integrity ok, ${users#ok } user(s)"
step_done

# ------------------------------------------------------------------ browser
# Chromium trusts pebble's root through an NSS database in its $HOME (~/.pki/nssdb),
# the Linux platform trust store chromium honours for locally added roots: the chain
# and the name are really verified (an SPKI pin of the leaf would skip both).
step "browser profile trusting pebble's root (NSS db)"
BHOME=$WORK/browser-home
mkdir -p "$BHOME/.pki/nssdb" "$WORK/profile"
certutil -N -d "sql:$BHOME/.pki/nssdb" --empty-password
certutil -A -d "sql:$BHOME/.pki/nssdb" -n "pebble test root" -t "C,," -i "$ROOT_PEM"
step_done

# The browser runs in a network namespace of its own (`unshare --net`, only a
# loopback): it sees none of the host's network changes (other tests add and remove
# Docker networks; Chromium aborts requests with ERR_NETWORK_CHANGED on each) and
# reaches nothing but the proxy, whose port is forwarded in through a Unix socket.
node "$HERE/forward.mjs" "unix:$WORK/proxy.sock" "tcp:127.0.0.1:$HTTPS_PORT" >"$WORK/forward.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -S $WORK/proxy.sock ]] && break; sleep 0.1; done
[[ -S $WORK/proxy.sock ]] || die "the forwarder to the proxy did not start ($(cat "$WORK/forward.log"))"
export E2E_PROXY_SOCKET=$WORK/proxy.sock
export E2E_URL="https://$DOMAIN:$HTTPS_PORT"
export E2E_DOMAIN=$DOMAIN E2E_HOME=$BHOME E2E_PROFILE=$WORK/profile E2E_ARTIFACTS=$ARTIFACTS
# (WEBUI_E2E_EXPECT: another expected answer, to see the failure path and its screenshot)
export E2E_WORK=$WORK E2E_MODEL=standin:latest E2E_EXPECT=${WEBUI_E2E_EXPECT:-"Hello from the stand-in model."}
browser() { # phase
	local out=$WORK/browser-$1.json
	unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh node "$HERE/browser.mjs" "$1" "$out" ||
		die "browser phase $1 failed"
	jq -r '.steps[] | "  browser: \(.name): \(.ms) ms\(if .detail then " — " + .detail else "" end)"' "$out"
	jq -r '.steps[] | "browser: \(.name)|\(.ms)"' "$out" >>"$WORK/browser-steps"
}

step "browser: admin, model, streamed answer, 20 MB upload"
browser first
step_done

step "webui update to the same Open WebUI version (another image id): container recreated"
push_update_variant
old_id=$("$DOCKER" inspect -f '{{.Id}}' "$PROJECT-open-webui")
webui update --image "$UPDATE_IMAGE" >"$WORK/webui-update.log" 2>&1 || {
	tail -n 30 "$WORK/webui-update.log" >&2
	die "webui update --image $UPDATE_IMAGE failed"
}
sed 's/^/    /' "$WORK/webui-update.log" | grep -v -E '^\s*$' | tail -n 8
new_id=$("$DOCKER" inspect -f '{{.Id}}' "$PROJECT-open-webui")
[[ $old_id != "$new_id" ]] || die "the open-webui container was not recreated by webui update"
running_image=$("$DOCKER" inspect -f '{{.Config.Image}}' "$PROJECT-open-webui")
[[ $running_image == "$UPDATE_IMAGE" ]] || die "after the update $PROJECT-open-webui runs $running_image, not $UPDATE_IMAGE"
kill -0 "$WEBUI_PID" 2>/dev/null || die "webui up exited during the update: $(tail -n 20 "$WEBUI_LOG")"
deadline=$((SECONDS + 300))
until "${CURL[@]}" -fo /dev/null "https://$DOMAIN:$HTTPS_PORT/health" 2>/dev/null; do
	((SECONDS < deadline)) || die "Open WebUI did not answer through the proxy within 300s after the update"
	sleep 1
done
log "container recreated (${old_id:0:12} -> ${new_id:0:12}), now $running_image; the proxy serves it again"
step_done

step "browser: reload, still logged in, the chat still there"
browser second
step_done

# Issue 12 on the real Open WebUI: this populated install (admin, the chat, the upload)
# moves to Postgres, then a separate 3-replica site proves sessions, live events and
# a killed replica. Each phase script says what it checks at its top.
step "migrate-db --to postgres on this install: same users and chats (migrate.sh)"
MIGRATE_STATE=$STATE MIGRATE_PROJECT=$PROJECT MIGRATE_PORT=$APP_PORT \
	MIGRATE_UP_PID=$WEBUI_PID MIGRATE_ADMIN_EMAIL=$E2E_ADMIN_EMAIL \
	MIGRATE_ADMIN_PASSWORD=$E2E_ADMIN_PASSWORD WEBUI_BIN=$WEBUI_BIN \
	bash "$HERE/migrate.sh" "$UPDATE_IMAGE" || die "the migrate-db phase failed (output above)"
step_done

step "scale-out: up --replicas 3, session, live events, a replica killed (scale.sh)"
WEBUI_BIN=$WEBUI_BIN bash "$HERE/scale.sh" "$IMAGE" || die "the scale-out phase failed (output above)"
step_done

log "exercised: real Open WebUI $VERSION pulled from the local registry by webui up;"
log "  a pebble-issued certificate (HTTP-01) trusted by chromium through NSS;"
log "  the admin's $([[ $E2E_ADMIN_MODE == login ]] && echo "login (made by webui up --admin-email)" || echo "signup as the first user"), model pick,"
log "  a streamed answer seen growing over the websocket through the proxy;"
log "  a 20 MB upload (no 413); webui update to the same version (container recreated)"
log "  keeping the session and the chat; migrate-db to Postgres keeping users and chats;"
log "  3 replicas on Postgres + Redis: one session on all, live events, a replica killed;"
log "  container ports published on 127.0.0.1 only, Ollama not published."
if [[ -f $WORK/browser-steps ]]; then
	while IFS='|' read -r n ms; do STEPS+=("$(printf '  %-56s %5sms' "$n" "$ms")"); done <"$WORK/browser-steps"
fi
