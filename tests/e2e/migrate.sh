#!/usr/bin/env bash
# `webui migrate-db --to postgres` on a populated SQLite install of the REAL Open WebUI:
# the same users and chats are visible afterwards (issue 12, item 2).
#
# How to call it:
#   standalone (makes its own install, project t-h4-migrate, removes it on exit):
#     bash tests/e2e/migrate.sh [OPEN_WEBUI_IMAGE]
#   on an install someone else started with `webui up` (e.g. tests/e2e/run.sh's t-e2e):
#     MIGRATE_STATE=$STATE MIGRATE_PROJECT=t-e2e MIGRATE_PORT=$APP_PORT \
#     MIGRATE_UP_PID=$WEBUI_PID MIGRATE_ADMIN_EMAIL=$E2E_ADMIN_EMAIL \
#     MIGRATE_ADMIN_PASSWORD=$E2E_ADMIN_PASSWORD WEBUI_BIN=$WEBUI_BIN \
#       bash tests/e2e/migrate.sh "$IMAGE"
#     It stops that `webui up` (SIGTERM to MIGRATE_UP_PID), migrates, starts its own
#     `webui up` (self-signed, loopback) on the same state dir and port, checks, and
#     stops it again; the caller's cleanup removes the project (Postgres included:
#     same project labels). Exit 0 passed, 1 failed, 3 missing prerequisites.
#
# Needs: dockerd, the local registry with the image (default
# 127.0.0.1:5000/webui-test/open-webui-real:0.12.4; present in dockerd or pulled, ~14 GB
# free) and the Postgres test image (WEBUI_TEST_POSTGRES_IMAGE from
# /var/lib/webui-ci/env, made by tests/infra/setup.sh), curl, jq. The image is never
# removed (other tests use it).
#
# What it proves, all through Open WebUI's own API on 127.0.0.1:<port>:
#   1. populated install on SQLite: the admin (made by `webui up --admin-email`), a
#      second user, two chats (one per user, one archived, one pinned, unicode titles);
#   2. `webui migrate-db --to postgres` is refused while `webui up` runs, then succeeds
#      (it takes its own backup), and a second run is refused (already on Postgres);
#   3. `webui up` again: the Open WebUI container now has DATABASE_URL (Postgres), the
#      webui.db file in the volume is byte-for-byte what it was, both users log in with
#      their passwords, the user list and each user's chat list (ids, titles) and each
#      chat's messages are the same as before, archived/pinned flags included;
#   4. a chat created after the migration lands in Postgres (psql count grows);
#   5. `webui backup` on Postgres holds the database (postgres.dump, format 2), and
#      `webui restore` of it brings the chats back as they were at the backup.
set -euo pipefail

export PATH="${HOME:-/root}/.cargo/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENV_FILE=/var/lib/webui-ci/env
# shellcheck disable=SC1090
[[ -f $ENV_FILE ]] && source "$ENV_FILE"
IMAGE=${1:-${WEBUI_TEST_REGISTRY:-127.0.0.1:5000}/webui-test/open-webui-real:${OPENWEBUI_VERSION:-0.12.4}}
PG_IMAGE=${WEBUI_TEST_POSTGRES_IMAGE:-}
REDIS_IMAGE=${WEBUI_TEST_REDIS_IMAGE:-}
DOCKER=${WEBUI_TEST_DOCKER_CLI:-/usr/bin/docker}
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)

log() { printf 'migrate: %s\n' "$*"; }
die() {
	printf 'migrate: FAILED: %s\n' "$*" >&2
	exit 1
}
missing() {
	printf 'migrate: SKIP: %s\n' "$*" >&2
	exit 3
}
command -v jq >/dev/null || missing "jq is not installed"
command -v curl >/dev/null || missing "curl is not installed"
"$DOCKER" info >/dev/null 2>&1 || missing "dockerd is not reachable"
[[ -n $PG_IMAGE ]] || missing "WEBUI_TEST_POSTGRES_IMAGE is not set (run tests/infra/setup.sh)"

GIVEN=0
[[ -n ${MIGRATE_PROJECT:-} ]] && GIVEN=1
PROJECT=${MIGRATE_PROJECT:-t-h4-migrate}
WORK=$(mktemp -d /tmp/webui-migrate.XXXXXX)
STATE=${MIGRATE_STATE:-$WORK/state}
ADMIN_EMAIL=${MIGRATE_ADMIN_EMAIL:-migrate-admin@example.test}
ADMIN_PASSWORD=${MIGRATE_ADMIN_PASSWORD:-'migrate-Passw0rd!'}
T0=$SECONDS

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 10000))
		! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && {
			echo "$p"
			return
		}
	done
}
PORT=${MIGRATE_PORT:-$(free_port)}
BASE=http://127.0.0.1:$PORT

if [[ -z ${WEBUI_BIN:-} ]]; then
	log "building webui (cargo build)"
	(cd "$ROOT" && cargo build --locked --quiet)
	WEBUI_BIN=$ROOT/target/debug/webui
fi
webui() { "$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" "$@"; }

UP_PID=""
stop_up() {
	[[ -n $UP_PID ]] || return 0
	if kill -0 "$UP_PID" 2>/dev/null; then
		kill -TERM "$UP_PID" 2>/dev/null || true
		for _ in $(seq 1 150); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$UP_PID" 2>/dev/null || true
	fi
	wait "$UP_PID" 2>/dev/null || true
	UP_PID=""
}
cleanup_project() {
	local f="label=webui.project=$PROJECT" c n v
	for c in $("$DOCKER" ps -aq --filter "$f"); do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
	for n in $("$DOCKER" network ls -q --filter "$f"); do "$DOCKER" network rm "$n" >/dev/null 2>&1 || true; done
	for v in $("$DOCKER" volume ls -q --filter "$f"); do "$DOCKER" volume rm -f "$v" >/dev/null 2>&1 || true; done
}
on_exit() {
	local rc=$?
	stop_up
	if ((rc != 0)); then
		log "last lines of webui up:"
		tail -n 30 "$WORK"/up*.log 2>/dev/null | sed 's/^/    /' >&2 || true
		log "last lines of $PROJECT-open-webui:"
		"$DOCKER" logs --tail 30 "$PROJECT-open-webui" 2>&1 | sed 's/^/    /' >&2 || true
	fi
	if ((GIVEN == 0)) && [[ ${MIGRATE_KEEP:-} != 1 ]]; then
		cleanup_project
		rm -rf "$WORK"
	elif ((GIVEN == 1)); then
		rm -rf "$WORK"
	else
		log "MIGRATE_KEEP=1: leaving project $PROJECT and $WORK"
	fi
	printf 'migrate: total %ss, %s\n' "$((SECONDS - T0))" "$([[ $rc == 0 ]] && echo PASSED || echo "FAILED (exit $rc)")"
	exit "$rc"
}
trap on_exit EXIT
trap 'printf "migrate: FAILED: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# `webui up` in the background, self-signed on loopback; extra args appended.
start_up() { # log-name extra-args...
	local name=$1
	shift
	UP_LOG=$WORK/$name.log
	: >"$UP_LOG"
	WEBUI_ADMIN_PASSWORD=$ADMIN_PASSWORD "$WEBUI_BIN" --state-dir "$STATE" --project "$PROJECT" up \
		--listen "127.0.0.1:$(free_port)" --http-listen 127.0.0.1:0 \
		--image "$IMAGE" --port "$PORT" --pull never --health-timeout 15m \
		--admin-email "$ADMIN_EMAIL" "$@" >"$UP_LOG" 2>&1 &
	UP_PID=$!
	local deadline=$((SECONDS + 900))
	until grep -q "Open WebUI is ready at" "$UP_LOG"; do
		kill -0 "$UP_PID" 2>/dev/null || die "webui up exited: $(tail -n 20 "$UP_LOG")"
		((SECONDS < deadline)) || die "Open WebUI not ready within 900s"
		sleep 1
	done
	log "webui up ready ($name, $((SECONDS - T0))s)"
}

api() { # method path token [json]
	local m=$1 p=$2 t=$3 d=${4:-}
	local args=(-fsS -X "$m" -H 'Content-Type: application/json' --max-time 60)
	[[ -n $t ]] && args+=(-H "Authorization: Bearer $t")
	[[ -n $d ]] && args+=(--data "$d")
	curl "${args[@]}" "$BASE$p"
}
signin() { # email password -> token
	api POST /api/v1/auths/signin "" "$(jq -nc --arg e "$1" --arg p "$2" '{email: $e, password: $p}')" | jq -er .token
}
# What a user sees: their chat list, pinned and archived chats (id, title), and each
# of those chats' title, flags and messages.
snapshot() { # token
	local t=$1 lists id
	lists=$(for l in "" pinned archived; do
		api GET "/api/v1/chats/$l" "$t" | jq -c --arg l "${l:-list}" '{($l): ([.[] | {id, title}] | sort_by(.id))}'
	done | jq -sc add)
	echo "$lists"
	for id in $(jq -r '[.[][] | .id] | unique | .[]' <<<"$lists"); do
		api GET "/api/v1/chats/$id" "$t" | jq -c '{id, title, archived, pinned, messages: [.chat.messages[]? | {role, content}]}'
	done
}
users() { # admin token: ids, emails, roles
	api GET /api/v1/users/ "$1" | jq -c '[.. | objects | select(has("email") and has("role")) | {id, email, role, name}] | unique_by(.id)'
}
pg_count() { # table
	"$DOCKER" exec "$PROJECT-postgres" psql -U openwebui -d openwebui -tAc "select count(*) from \"$1\""
}

# ------------------------------------------------------------------ 1. the install
"$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || {
	free_gb=$(($(df --output=avail -k "$("$DOCKER" info -f '{{.DockerRootDir}}')" | tail -n 1) / 1048576))
	((free_gb >= 14)) || missing "$IMAGE is not in dockerd and only $free_gb GB are free (a pull needs ~14)"
	log "pulling $IMAGE"
	"$DOCKER" pull -q "$IMAGE" >/dev/null
}
"$DOCKER" pull -q "$PG_IMAGE" >/dev/null
if ((GIVEN == 1)); then
	[[ -n ${MIGRATE_PORT:-} ]] || die "MIGRATE_PORT (Open WebUI's loopback port) is needed with MIGRATE_PROJECT"
	UP_PID=${MIGRATE_UP_PID:-}
	log "using the running install of project $PROJECT on $BASE"
else
	cleanup_project
	log "project $PROJECT: webui up with $IMAGE on $BASE (SQLite)"
	start_up up-sqlite
fi

admin=$(signin "$ADMIN_EMAIL" "$ADMIN_PASSWORD") || die "the admin cannot sign in before the migration"
U2_EMAIL=migrate-user2@example.test U2_PASSWORD='user2-Passw0rd!'
api POST /api/v1/auths/add "$admin" \
	"$(jq -nc --arg e "$U2_EMAIL" --arg p "$U2_PASSWORD" '{name: "Zoë Second", email: $e, password: $p, role: "user"}')" >/dev/null
user2=$(signin "$U2_EMAIL" "$U2_PASSWORD")
new_chat() { # token title archived-after? pin?
	local body id
	body=$(jq -nc --arg t "$2" '{chat: {title: $t, models: ["standin:latest"], messages: [
		{id: "m1", role: "user", content: ("question about " + $t), timestamp: 1700000000},
		{id: "m2", parentId: "m1", role: "assistant", content: ("answer about " + $t + " — ✓"), timestamp: 1700000001}],
		history: {currentId: "m2", messages: {}}}}')
	id=$(api POST /api/v1/chats/new "$1" "$body" | jq -er .id)
	[[ ${3:-} == archive ]] && api POST "/api/v1/chats/$id/archive" "$1" >/dev/null
	[[ ${4:-} == pin ]] && api POST "/api/v1/chats/$id/pin" "$1" >/dev/null
	echo "$id"
}
c1=$(new_chat "$admin" "Migrate test ünïcode 🚀" "" pin)
c2=$(new_chat "$admin" "Archived one" archive)
c3=$(new_chat "$user2" "Second user's chat")
log "populated: 2 users, chats $c1 (pinned), $c2 (archived), $c3 (user 2)"
# ------------------------------------------------------------------ 2. migrate-db
if [[ -n $UP_PID ]]; then
	if webui migrate-db --to postgres --postgres-image "$PG_IMAGE" >"$WORK/refused-up.log" 2>&1; then
		die "migrate-db ran while webui up serves the project"
	fi
	grep -q "is serving project" "$WORK/refused-up.log" || die "unexpected refusal: $(cat "$WORK/refused-up.log")"
	log "refused while webui up runs: $(grep -m1 error: "$WORK/refused-up.log")"
	stop_up
fi

# A backup older than the database's last change is refused, and the refusal leaves
# everything as it was: Open WebUI running on SQLite, no Postgres, no password, no record.
webui backup --output "$WORK/old-backup.tar.gz" >/dev/null
sleep 2
c5=$(new_chat "$admin" "Made after the backup")
if webui migrate-db --to postgres --postgres-image "$PG_IMAGE" --backup "$WORK/old-backup.tar.gz" >"$WORK/stale.log" 2>&1; then
	die "migrate-db accepted a backup older than the last change"
fi
grep -q "before Open WebUI last wrote its database" "$WORK/stale.log" || die "unexpected stale-backup message: $(cat "$WORK/stale.log")"
log "stale --backup refused: $(grep -m1 error: "$WORK/stale.log")"
[[ $("$DOCKER" inspect -f '{{.State.Running}}' "$PROJECT-open-webui") == true ]] || die "Open WebUI was not started again after the refusal"
! "$DOCKER" inspect "$PROJECT-postgres" >/dev/null 2>&1 || die "the refused run left its Postgres container"
! "$DOCKER" volume inspect "$PROJECT-postgres" >/dev/null 2>&1 || die "the refused run left its Postgres volume"
[[ ! -e $STATE/projects/$PROJECT/postgres_password && ! -e $STATE/projects/$PROJECT/database.json ]] ||
	die "the refused run left a password file or database.json"
deadline=$((SECONDS + 300))
until curl -fsS --max-time 5 "$BASE/health" >/dev/null 2>&1; do
	((SECONDS < deadline)) || die "Open WebUI is not healthy within 300s after the refusal"
	sleep 1
done
api GET "/api/v1/chats/$c5" "$admin" >/dev/null || die "Open WebUI does not serve the last chat after the refusal"
log "after the refusal: Open WebUI serves on SQLite again, nothing of Postgres left"

before_admin=$(snapshot "$admin")
before_user2=$(snapshot "$user2")
before_users=$(users "$admin")
if ! { grep -q "$c1" <<<"$before_admin" && grep -q "$c2" <<<"$before_admin" && grep -q "$c3" <<<"$before_user2"; }; then
	die "the chats just made are not listed: $before_admin / $before_user2"
fi
[[ $(jq length <<<"$before_users") -ge 2 ]] || die "fewer than 2 users listed: $before_users"

db_sum() { "$DOCKER" run --rm -v "$PROJECT-open-webui:/d:ro" --entrypoint sha256sum "$IMAGE" /d/webui.db | cut -d' ' -f1; }
log "webui migrate-db --to postgres"
t=$SECONDS
webui migrate-db --to postgres --postgres-image "$PG_IMAGE" --json >"$WORK/migrate.json" 2>"$WORK/migrate.err" ||
	die "migrate-db failed: $(cat "$WORK/migrate.err" "$WORK/migrate.json")"
sed 's/^/    /' "$WORK/migrate.json"
log "migrate-db took $((SECONDS - t))s"
sum_after_migrate=$(db_sum)
# What the SQLite file holds, read on its own (Open WebUI is stopped now): the summary
# must report exactly that many rows moved (on run.sh's install there is also the
# browser's chat), and at least what this script made.
sqlite_count() {
	"$DOCKER" run --rm -v "$PROJECT-open-webui:/d:ro" --entrypoint /app/venv/bin/python "$IMAGE" -c \
		'import sqlite3, sys; c = sqlite3.connect("file:/d/webui.db?immutable=1", uri=True); print(c.execute("select count(*) from \"%s\"" % sys.argv[1]).fetchone()[0])' "$1"
}
for table in chat user auth; do
	n=$(sqlite_count "$table") || die "cannot count the rows of $table in webui.db"
	jq -e --arg t "$table" --argjson n "$n" '.engine == "postgres" and .rows[$t] == $n' "$WORK/migrate.json" >/dev/null ||
		die "the --json summary does not report the $n rows of $table that webui.db holds"
done
jq -e '.rows.chat >= 3 and .rows.user >= 2 and .rows.auth >= 2' "$WORK/migrate.json" >/dev/null ||
	die "the --json summary reports fewer than the 3 chats, 2 users and 2 auths made here"
backup=$(jq -r .backup "$WORK/migrate.json")
[[ -f $backup ]] || die "the backup migrate-db reports ($backup) is not there"
tar -xzOf "$backup" manifest.json | jq -e '.method == "stopped" and (.files | has("data/webui.db"))' >/dev/null ||
	die "the backup was not taken while Open WebUI was stopped, or lacks webui.db"
[[ $(stat -c %a "$backup") == 600 ]] || die "the backup is not mode 0600"
[[ $(stat -c %a "$STATE/projects/$PROJECT/postgres_password") == 600 ]] || die "the postgres password file is not 0600"
if webui migrate-db --to postgres --postgres-image "$PG_IMAGE" >"$WORK/again.log" 2>&1; then
	die "a second migrate-db was not refused"
fi
grep -q "already on postgres" "$WORK/again.log" || die "unexpected second-run message: $(cat "$WORK/again.log")"
log "second run refused: $(grep -m1 error: "$WORK/again.log")"
moved_chats=$(jq .rows.chat "$WORK/migrate.json")
[[ $(pg_count chat) == "$moved_chats" ]] || die "Postgres has $(pg_count chat) chats, expected the $moved_chats of webui.db"
[[ $(pg_count user) == "$(jq length <<<"$before_users")" ]] || die "Postgres user count differs"

# ------------------------------------------------------------------ 3. on Postgres
# Engine workaround, not webui's: a `docker swarm leave` by a concurrent test (tests/swarm.rs)
# drops the embedded-DNS records of bridge containers created while the engine was a
# swarm node, until they restart (dockerd 20.10). Seen as Open WebUI's "failed to
# resolve host 'postgres'"; say so loudly and restart Postgres when it happens.
if ! "$DOCKER" run --rm --network "$PROJECT-webui" --entrypoint getent "$PG_IMAGE" hosts postgres >/dev/null 2>&1; then
	log "WARNING: 'postgres' does not resolve on $PROJECT-webui (engine DNS lost after a swarm leave?); restarting $PROJECT-postgres"
	"$DOCKER" restart "$PROJECT-postgres" >/dev/null
fi
UP_ARGS=()
if "$WEBUI_BIN" up --help | grep -q -- '--replicas'; then
	UP_ARGS+=(--replicas "${MIGRATE_REPLICAS:-1}" --postgres-image "$PG_IMAGE")
	[[ -n $REDIS_IMAGE ]] && UP_ARGS+=(--redis-image "$REDIS_IMAGE")
	log "webui up ${UP_ARGS[*]}"
else
	# Before `up --replicas` existed: hand Open WebUI the URL by hand.
	pw=$(cat "$STATE/projects/$PROJECT/postgres_password")
	UP_ARGS+=(--env "DATABASE_URL=postgresql+psycopg://openwebui:$pw@postgres:5432/openwebui")
	log "webui up has no --replicas yet: passing DATABASE_URL with --env"
fi
start_up up-postgres "${UP_ARGS[@]}"
"$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$PROJECT-open-webui" | grep -q '^DATABASE_URL=postgresql' ||
	die "Open WebUI was not started with a Postgres DATABASE_URL"
log "Open WebUI runs with DATABASE_URL=postgresql... (Postgres)"

admin=$(signin "$ADMIN_EMAIL" "$ADMIN_PASSWORD") || die "the admin cannot sign in on Postgres"
user2=$(signin "$U2_EMAIL" "$U2_PASSWORD") || die "user 2 cannot sign in on Postgres"
after_admin=$(snapshot "$admin")
after_user2=$(snapshot "$user2")
after_users=$(users "$admin")
[[ $before_users == "$after_users" ]] || die "users differ:
before: $before_users
after:  $after_users"
[[ $before_admin == "$after_admin" ]] || die "the admin's chats differ:
before: $before_admin
after:  $after_admin"
[[ $before_user2 == "$after_user2" ]] || die "user 2's chats differ:
before: $before_user2
after:  $after_user2"
log "same users ($(jq length <<<"$after_users")), same chats and messages for both users (pinned/archived kept)"

c4=$(new_chat "$admin" "Made on Postgres")
[[ $(pg_count chat) == $((moved_chats + 1)) ]] || die "a chat made after the migration is not in Postgres"
log "a new chat ($c4) lands in Postgres"
[[ $(db_sum) == "$sum_after_migrate" ]] || die "webui.db changed after the migration: it must stay the untouched fallback"
log "webui.db in the volume is unchanged since the migration (the fallback)"
# (Step 5's restore writes the backup's copy of it back: SQLite's online backup makes
# a consistent copy, equal in content, not byte for byte.)

# ------------------------------------------------------------------ 5. backup and restore on Postgres
# The chats are in Postgres now: the backup must hold the database (a pg_dump in the
# archive), and restoring it must bring back the chats as they were.
webui backup --output "$WORK/pg-backup.tar.gz" >"$WORK/pg-backup.log" 2>&1 ||
	die "webui backup on Postgres failed: $(cat "$WORK/pg-backup.log")"
tar -xzOf "$WORK/pg-backup.tar.gz" manifest.json | jq -e '.format == 2 and (.files | has("postgres.dump"))' >/dev/null ||
	die "the backup on Postgres holds no postgres.dump: $(cat "$WORK/pg-backup.log")"
at_backup=$(snapshot "$admin")
c5=$(new_chat "$admin" "Made after the Postgres backup")
[[ $(snapshot "$admin") != "$at_backup" ]] || die "the chat made after the backup does not show"
stop_up
webui restore "$WORK/pg-backup.tar.gz" --yes >"$WORK/pg-restore.log" 2>&1 ||
	die "webui restore on Postgres failed: $(cat "$WORK/pg-restore.log")"
grep -q "restored the Postgres database from" "$WORK/pg-restore.log" ||
	die "restore did not put the database back: $(cat "$WORK/pg-restore.log")"
start_up up-restored "${UP_ARGS[@]}"
admin=$(signin "$ADMIN_EMAIL" "$ADMIN_PASSWORD") || die "the admin cannot sign in after the restore"
restored=$(snapshot "$admin")
[[ $restored == "$at_backup" ]] || die "after the restore the admin's chats are not those of the backup:
backup:   $at_backup
restored: $restored"
[[ $(pg_count chat) == $((moved_chats + 1)) ]] || die "Postgres has $(pg_count chat) chats after the restore, expected $((moved_chats + 1))"
log "the backup holds the Postgres database; restored, the chats are those of the backup (chat $c5, made after it, is gone)"
stop_up
log "PASSED"
