#!/usr/bin/env bash
# Scale-out end to end (issue 12, item 1): `webui up --replicas 3` with the REAL Open
# WebUI image, Postgres and Redis (the local test images), the stand-in Ollama that
# streams its tokens 300 ms apart, a local-CA certificate (--self-signed), and a real
# browser plus a second API client through webui's proxy (tests/e2e/scale.mjs):
#
#   1. a client logged in through the proxy keeps its session on every replica and
#      gets live websocket events (a streamed answer: socket.io frames and a growing
#      DOM) while the other client's GETs spread over all 3 replicas (counted in each
#      replica's own access log; every request found in exactly one);
#   2. the replica holding the browser's websocket is killed (`docker kill`) during the
#      steady API client: no GET fails, the page reconnects by itself and stays logged
#      in, a new message streams, and the replica comes back (supervision) and serves.
#
#   tests/e2e/scale.sh [IMAGE]    # default 127.0.0.1:5000/webui-test/open-webui-real:<ver>
#
# From run.sh (the lead wires it): after the image is local, before run.sh's cleanup:
#   WEBUI_BIN=$WEBUI_BIN bash "$HERE/scale.sh" "$IMAGE" || die "scale-out phase failed"
# It uses its own project (t-h5-scale), state directory, ports and browser profile,
# so it can run next to run.sh's project; it never removes an image (when the image
# is not local, `webui up` pulls it and it stays: run.sh owns that cache).
#
# Needs root, dockerd, the local registry with the Postgres/Redis test images
# (tests/infra/setup.sh: WEBUI_TEST_POSTGRES_IMAGE, WEBUI_TEST_REDIS_IMAGE), chromium,
# certutil, node with tests/e2e/node_modules. Everything it starts (project
# t-h5-scale's containers, networks and volumes, found by label; webui; chromium; the
# forwarder) is removed on exit. Logs land in tests/e2e/artifacts/scale/.
#
# Exit codes: 0 passed, 1 failed.
# Knobs: WEBUI_BIN (default: `cargo build`, target/debug/webui), WEBUI_E2E_KEEP=1
#        (leave everything running), E2E_MIN_STATES (default 3),
#        E2E_RETURN_TIMEOUT_S (how long the killed replica may take to serve again,
#        default 300).
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
POSTGRES_IMAGE=${WEBUI_TEST_POSTGRES_IMAGE:-}
REDIS_IMAGE=${WEBUI_TEST_REDIS_IMAGE:-}
REPLICAS=3
PROJECT=t-h5-scale
DOMAIN=scale.webui.test
DOCKER=${WEBUI_TEST_DOCKER_CLI:-/usr/bin/docker}
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
ARTIFACTS=$HERE/artifacts/scale
WORK=$(mktemp -d /tmp/webui-scale.XXXXXX)
STATE=$WORK/state

T0=$SECONDS
DOCKERD_LOG=/var/log/webui-ci-dockerd.log
DOCKERD_LOG_AT=$(stat -c %s "$DOCKERD_LOG" 2>/dev/null || echo 0)
STEPS=()
step_name=""
step_t=0
log() { printf 'scale: %s\n' "$*"; }
die() {
	printf 'scale: FAILED: %s\n' "$*" >&2
	exit 1
}
step() {
	step_name=$1
	step_t=$SECONDS
	printf '\n=== scale: %s\n' "$step_name"
}
step_done() {
	STEPS+=("$(printf '%-58s %5ss' "$step_name" "$((SECONDS - step_t))")")
	step_name=""
}

PIDS=()
WEBUI_PID=""
WEBUI_LOG=$WORK/webui-up.log
project_objects() { # kind (ps -a | network ls | volume ls): names labelled with the project
	local kind=$1
	case $kind in
	containers) "$DOCKER" ps -a -q --filter "label=webui.project=$PROJECT" ;;
	networks) "$DOCKER" network ls -q --filter "label=webui.project=$PROJECT" ;;
	volumes) "$DOCKER" volume ls -q --filter "label=webui.project=$PROJECT" ;;
	esac
}
cleanup_project() {
	local c n v
	for c in $(project_objects containers); do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
	for n in $(project_objects networks); do "$DOCKER" network rm "$n" >/dev/null 2>&1 || true; done
	for v in $(project_objects volumes); do "$DOCKER" volume rm -f "$v" >/dev/null 2>&1 || true; done
	# Anything of the project's not labelled (by name): none expected.
	for c in $("$DOCKER" ps -a --format '{{.Names}}' | grep "^$PROJECT-" || true); do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
	for v in $("$DOCKER" volume ls --format '{{.Name}}' | grep "^$PROJECT-" || true); do "$DOCKER" volume rm -f "$v" >/dev/null 2>&1 || true; done
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
	mkdir -p "$ARTIFACTS"
	cp "$WORK"/*.log "$ARTIFACTS/" 2>/dev/null || true
	local c
	for c in $("$DOCKER" ps -a --filter "label=webui.project=$PROJECT" --format '{{.Names}}' 2>/dev/null || true); do
		"$DOCKER" logs --tail 400 "$c" >"$ARTIFACTS/$c.log" 2>&1 || true
	done
	if ((rc != 0)); then
		log "logs in $ARTIFACTS/"
		# A Docker swarm left while this ran wipes the embedded DNS of bridge-network
		# containers (replicas then fail to resolve `postgres`, `redis`, `ollama`).
		local left=0
		[[ -r $DOCKERD_LOG ]] && left=$(tail -c +"$((DOCKERD_LOG_AT + 1))" "$DOCKERD_LOG" | grep -c 'left gossip cluster' || true)
		if ((left > 0)); then
			log "NOTE: a Docker swarm was left while this ran ($DOCKERD_LOG): that breaks name resolution of running containers; run this alone"
		fi
		if [[ -f $WEBUI_LOG ]]; then
			log "last lines of webui's output:"
			tail -n 25 "$WEBUI_LOG" | sed 's/^/    /' >&2
		fi
	fi
	if [[ ${WEBUI_E2E_KEEP:-} == 1 ]]; then
		log "WEBUI_E2E_KEEP=1: leaving webui (pid $WEBUI_PID), project $PROJECT and $WORK"
	else
		printf '\n=== scale: cleanup\n'
		stop_webui
		local p
		for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
		for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
		# A chromium left by a crashed driver: only ours (its profile is in $WORK).
		for p in $(pgrep -f -- "--user-data-dir=$WORK/profile" || true); do kill "$p" 2>/dev/null || true; done
		cleanup_project
		left=$(project_objects containers; project_objects volumes)
		[[ -z $left ]] || log "WARNING: left behind: $left"
		rm -rf "$WORK"
	fi
	printf '\n=== scale: steps\n'
	printf '  %s\n' "${STEPS[@]}"
	printf '=== scale: total %ss, %s\n' "$((SECONDS - T0))" "$([[ $rc == 0 ]] && echo PASSED || echo "FAILED (exit $rc)")"
	exit "$rc"
}
trap on_exit EXIT
trap 'printf "scale: FAILED: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# A free loopback port in 20000-29999 whose next $2 ports are free too.
USED_PORTS=" "
free_port() { # [count]
	local p i n=${1:-1} ok
	while :; do
		p=$((20000 + RANDOM % 9990))
		ok=1
		for ((i = 0; i < n; i++)); do
			if [[ $USED_PORTS == *" $((p + i)) "* ]] || ss -Hltn "sport = :$((p + i))" | grep -q .; then ok=0; fi
		done
		((ok)) || continue
		for ((i = 0; i < n; i++)); do USED_PORTS+="$((p + i)) "; done
		echo "$p"
		return
	done
}

[[ $(id -u) -eq 0 ]] || die "must run as root (docker, unshare)"
for tool in "$DOCKER" jq curl ss certutil node npm unshare; do
	command -v "$tool" >/dev/null || die "$tool not found (tests/infra/setup.sh installs the e2e packages)"
done
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium not found (apt-get install chromium)"
"$DOCKER" info >/dev/null 2>&1 || die "dockerd does not answer (bash tests/infra/setup.sh)"
[[ -n $POSTGRES_IMAGE && -n $REDIS_IMAGE ]] ||
	die "WEBUI_TEST_POSTGRES_IMAGE / WEBUI_TEST_REDIS_IMAGE are not set ($ENV_FILE; bash tests/infra/setup.sh builds them)"
rm -rf "$ARTIFACTS"
mkdir -p "$STATE" "$ARTIFACTS"
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
cp "$WEBUI_BIN" "$WORK/webui"
WEBUI_BIN=$WORK/webui
"$WEBUI_BIN" up --help | grep -q -- '--replicas' || die "this webui has no 'up --replicas'"
want=$(jq -r '.packages["node_modules/playwright-core"].version' "$HERE/package-lock.json")
have=$(jq -r .version "$HERE/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [[ $want != "$have" ]]; then
	(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi
step_done

# ------------------------------------------------------------------ webui up
HTTPS_PORT=$(free_port)
APP_PORT=$(free_port $((REPLICAS + 1)))
export E2E_ADMIN_EMAIL=scale-admin@example.test E2E_ADMIN_PASSWORD='scale-Passw0rd!'
export WEBUI_ADMIN_PASSWORD=$E2E_ADMIN_PASSWORD
step "webui up --replicas $REPLICAS: Postgres, Redis, $REPLICAS real Open WebUI replicas"
image_local=$("$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 && echo yes || echo no)
log "image $IMAGE local: $image_local (never removed here)"
"$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" up --domain "$DOMAIN" --self-signed \
	--listen "127.0.0.1:$HTTPS_PORT" --no-http --skip-preflight \
	--image "$IMAGE" --port "$APP_PORT" \
	--replicas "$REPLICAS" --postgres-image "$POSTGRES_IMAGE" --redis-image "$REDIS_IMAGE" \
	--ollama --ollama-image "$OLLAMA_IMAGE" \
	--admin-email "$E2E_ADMIN_EMAIL" \
	--health-timeout 15m >"$WEBUI_LOG" 2>&1 &
WEBUI_PID=$!
deadline=$((SECONDS + 900))
until grep -q "Open WebUI is ready at" "$WEBUI_LOG"; do
	kill -0 "$WEBUI_PID" 2>/dev/null || die "webui up exited: $(tail -n 20 "$WEBUI_LOG")"
	((SECONDS < deadline)) || die "Open WebUI not ready within 900s"
	sleep 1
done
log "$(grep -m1 "Open WebUI is ready at" "$WEBUI_LOG")"
step_done

step "the stack: $REPLICAS replicas on Postgres + Redis, loopback only"
CA_PEM=$STATE/ca/ca.pem
[[ -s $CA_PEM ]] || die "no local CA at $CA_PEM"
CURL=(curl -sS --cacert "$CA_PEM" --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" --max-time 10)
deadline=$((SECONDS + 120))
until "${CURL[@]}" -fo /dev/null "https://$DOMAIN:$HTTPS_PORT/health" 2>/dev/null; do
	((SECONDS < deadline)) || die "https://$DOMAIN:$HTTPS_PORT/health did not answer within 120s"
	sleep 1
done
role() { "$DOCKER" ps --filter "label=webui.project=$PROJECT" --filter "label=webui.role=$1" --format '{{.Names}}' | sort; }
mapfile -t replicas < <(role open-webui)
((${#replicas[@]} == REPLICAS)) || die "want $REPLICAS running open-webui replicas, found: ${replicas[*]:-none}"
[[ -n $(role postgres) ]] || die "no running postgres container in project $PROJECT"
[[ -n $(role redis) ]] || die "no running redis container in project $PROJECT"
for c in "${replicas[@]}"; do
	envs=$("$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$c")
	grep -q '^DATABASE_URL=postgres' <<<"$envs" || die "$c has no Postgres DATABASE_URL"
	grep -q '^WEBSOCKET_MANAGER=redis$' <<<"$envs" || die "$c does not use WEBSOCKET_MANAGER=redis"
	grep -q '^REDIS_URL=redis' <<<"$envs" || die "$c has no REDIS_URL"
	grep -q '^WEBUI_SECRET_KEY=.' <<<"$envs" || die "$c has no WEBUI_SECRET_KEY"
	"$DOCKER" inspect -f '{{json .NetworkSettings.Ports}}' "$c" |
		jq -e '[.[]? // [] | .[] | .HostIp] | all(. == "127.0.0.1")' >/dev/null ||
		die "$c is published beyond loopback"
done
keys=$(for c in "${replicas[@]}"; do "$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$c" | grep '^WEBUI_SECRET_KEY='; done | sort -u | wc -l)
((keys == 1)) || die "the replicas do not share one WEBUI_SECRET_KEY"
for r in postgres redis; do
	b=$("$DOCKER" inspect -f '{{json .HostConfig.PortBindings}}' "$(role $r)")
	[[ $b == "{}" || $b == "null" ]] || die "$r is published: $b"
done
log "replicas: ${replicas[*]}; postgres $(role postgres), redis $(role redis): one secret, Postgres URL, Redis websocket manager; nothing published beyond loopback"
"${CURL[@]}" "https://$DOMAIN:$HTTPS_PORT/api/config" | jq -e '.features.enable_websocket' >/dev/null ||
	die "/api/config through the proxy does not show websocket support"
step_done

# `webui up` is ready when one replica answers; the others join the rotation when
# their own health passes (their first start waits for replica 1's migrations).
step "every replica healthy and in rotation (webui status)"
status_json() { "$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" status --json 2>/dev/null || true; }
deadline=$((SECONDS + 600))
until status_json | jq -e --argjson n "$REPLICAS" '.supervisor.replicas | length == $n and all(.state == "healthy")' >/dev/null; do
	kill -0 "$WEBUI_PID" 2>/dev/null || die "webui up exited: $(tail -n 20 "$WEBUI_LOG")"
	((SECONDS < deadline)) || die "not every replica healthy within 600s: $(status_json | jq -c '.supervisor.replicas')"
	sleep 2
done
log "replicas: $(status_json | jq -c '[.supervisor.replicas[] | {replica, container, upstream, state}]')"
step_done

step "browser profile trusting the local CA (NSS db)"
BHOME=$WORK/browser-home
mkdir -p "$BHOME/.pki/nssdb" "$WORK/profile"
certutil -N -d "sql:$BHOME/.pki/nssdb" --empty-password
certutil -A -d "sql:$BHOME/.pki/nssdb" -n "webui local CA" -t "C,," -i "$CA_PEM"
step_done

# The browser and the API client run in a network namespace of their own (only a
# loopback; the proxy's port forwarded in through a Unix socket), as in run.sh.
node "$HERE/forward.mjs" "unix:$WORK/proxy.sock" "tcp:127.0.0.1:$HTTPS_PORT" >"$WORK/forward.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -S $WORK/proxy.sock ]] && break; sleep 0.1; done
[[ -S $WORK/proxy.sock ]] || die "the forwarder to the proxy did not start ($(cat "$WORK/forward.log"))"
export E2E_PROXY_SOCKET=$WORK/proxy.sock E2E_URL="https://$DOMAIN:$HTTPS_PORT" E2E_DOMAIN=$DOMAIN
export E2E_HOME=$BHOME E2E_PROFILE=$WORK/profile E2E_ARTIFACTS=$ARTIFACTS E2E_CA=$CA_PEM
export E2E_MODEL=standin:latest E2E_EXPECT="Hello from the stand-in model."
export E2E_DOCKER=$DOCKER E2E_PROJECT=$PROJECT E2E_REPLICAS=$REPLICAS

step "browser + API client: spread, session, websocket events, kill a replica"
out=$WORK/scale.json
unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh node "$HERE/scale.mjs" "$out" ||
	die "the scale-out client checks failed (see above and $ARTIFACTS/)"
jq -r '.steps[] | "scale: \(.name)|\(.ms)"' "$out" >"$WORK/client-steps"
kill -0 "$WEBUI_PID" 2>/dev/null || die "webui up exited during the test: $(tail -n 20 "$WEBUI_LOG")"
step_done

step "webui status: $REPLICAS replicas running, Postgres and Redis"
"$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" status >"$WORK/status.log" 2>&1 || true
sed 's/^/    /' "$WORK/status.log"
"$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" status --json >"$WORK/status.json" 2>"$WORK/status-json.log" ||
	die "webui status --json failed: $(cat "$WORK/status.json" "$WORK/status-json.log")"
jq -e --argjson n "$REPLICAS" '
	([.containers[] | select(.service == "open-webui" and .running)] | length == $n) and
	([.containers[] | select(.service == "open-webui") | .replica] | sort == [range(1; $n + 1)]) and
	any(.containers[]; .service == "postgres" and .running) and
	any(.containers[]; .service == "redis" and .running)' "$WORK/status.json" >/dev/null ||
	die "webui status --json does not show $REPLICAS running replicas (1..$REPLICAS), Postgres and Redis: $(jq -c '[.containers[] | {service, name, replica, running}]' "$WORK/status.json")"
log "status: $(jq -c '[.containers[] | {service, replica, state}]' "$WORK/status.json")"
# The replica scale.mjs killed was brought back by webui (not by Docker's restart policy).
victim=$(jq -r .victim "$out")
jq -e --arg v "$victim" '[.supervisor.services[] | select(. as $s | $s.container == $v or ($v | endswith("-" + $s.container))) | .restarts // 0] | add // 0 >= 1' \
	"$WORK/status.json" >/dev/null ||
	die "webui status does not count a restart by webui of $victim: $(jq -c '.supervisor.services' "$WORK/status.json")"
log "webui restarted $victim: $(jq -c --arg v "$victim" '.supervisor.services[] | select(. as $s | $s.container == $v or ($v | endswith("-" + $s.container)))' "$WORK/status.json")"
step_done

if [[ -f $WORK/client-steps ]]; then
	while IFS='|' read -r n ms; do STEPS+=("$(printf '  %-56s %5sms' "$n" "$ms")"); done <"$WORK/client-steps"
fi
