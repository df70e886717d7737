#!/usr/bin/env bash
# Remove what the webui tests left in Docker. Idempotent; exits 0 when there
# is nothing to do or dockerd is not running.
#
# Removes:
#   * containers, networks and volumes labelled webui.test=1;
#   * containers and networks labelled webui.managed whose project label
#     (any webui.*project* label key, e.g. webui.project) starts with "t-";
#   * containers of the e2e suite's real Open WebUI image (open-webui-real) and
#     the data volumes of the e2e project (webui.project=t-e2e, webui.managed);
#   * local copies of the test images pulled from $WEBUI_TEST_REGISTRY
#     (the registry itself keeps them: it is the e2e image's cache).
# Never removes a volume that is not labelled webui.test=1 or a managed volume of
# the e2e project (containers are removed without -v, so not even their anonymous
# volumes).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

REGISTRY=${WEBUI_TEST_REGISTRY:-127.0.0.1:5000}
log() { printf 'cleanup: %s\n' "$*"; }

if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker || true); fi
if [[ -z $DOCKER ]] || ! "$DOCKER" info >/dev/null 2>&1; then
	log "docker not available, nothing to clean"
	exit 0
fi
docker() { "$DOCKER" "$@"; }

# Project-scoped objects of the product: labelled webui.managed and a
# webui.*project* label whose value starts with "t-". $1: container|network
managed_test_objects() {
	local kind=$1 ids
	if [[ $kind == container ]]; then
		ids=$(docker ps -aq --no-trunc --filter label=webui.managed)
	else
		ids=$(docker network ls -q --no-trunc --filter label=webui.managed)
	fi
	[[ -n $ids ]] || return 0
	# shellcheck disable=SC2086 # word splitting of ids is intended
	docker "$kind" inspect $ids 2>/dev/null | jq -r '
		.[] | select(any((.Config.Labels // .Labels // {}) | to_entries[];
			(.key | test("^webui\\..*project")) and (.value | startswith("t-"))))
		| .Id' || true
}

rc=0
removed=0

containers=$({
	docker ps -aq --no-trunc --filter label=webui.test=1
	managed_test_objects container
	docker ps -a --no-trunc --format '{{.ID}} {{.Image}}' | awk -v img="$REGISTRY/webui-test/open-webui-real:" 'index($2, img) == 1 {print $1}'
} | sort -u)
for id in $containers; do
	name=$(docker inspect -f '{{.Name}}' "$id" 2>/dev/null || echo "$id")
	if docker rm -f "$id" >/dev/null 2>&1; then
		log "removed container ${name#/}"
		removed=$((removed + 1))
	elif docker inspect "$id" >/dev/null 2>&1; then
		log "WARNING: could not remove container ${name#/}"
		rc=1
	fi
done

networks=$({
	docker network ls -q --no-trunc --filter label=webui.test=1
	managed_test_objects network
} | sort -u)
for id in $networks; do
	name=$(docker network inspect -f '{{.Name}}' "$id" 2>/dev/null || echo "$id")
	if docker network rm "$id" >/dev/null 2>&1; then
		log "removed network $name"
		removed=$((removed + 1))
	elif docker network inspect "$id" >/dev/null 2>&1; then
		log "WARNING: could not remove network $name (still in use?)"
		rc=1
	fi
done

for v in $({
	docker volume ls -q --filter label=webui.test=1
	docker volume ls -q --filter label=webui.managed --filter label=webui.project=t-e2e
} | sort -u); do
	if docker volume rm "$v" >/dev/null 2>&1; then
		log "removed volume $v"
		removed=$((removed + 1))
	elif docker volume inspect "$v" >/dev/null 2>&1; then
		log "WARNING: could not remove volume $v (still in use?)"
		rc=1
	fi
done

for img in $(docker images --format '{{.Repository}}:{{.Tag}}' | grep -F "$REGISTRY/webui-test/" || true); do
	if docker rmi "$img" >/dev/null 2>&1; then
		log "removed local image $img"
		removed=$((removed + 1))
	fi
done

log "removed $removed object(s)"
exit "$rc"
