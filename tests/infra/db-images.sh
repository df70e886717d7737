#!/usr/bin/env bash
# Stand-ins for the official `postgres` and `redis` images (no registry but the
# local one is reachable here), built from Debian packages and pushed to the
# local test registry:
#
#   tests/infra/db-images.sh     # called by tests/infra/setup.sh
#
# stdout: `export WEBUI_TEST_POSTGRES_IMAGE=...` and `export WEBUI_TEST_REDIS_IMAGE=...`
# lines for /var/lib/webui-ci/env; progress goes to stderr.
#
# One `debootstrap --variant=minbase bookworm` root filesystem with postgresql-15,
# redis-server, redis-tools and the two entrypoints below, imported twice with
# `docker import --change`:
#   127.0.0.1:5000/webui-test/postgres:15  the official image's interface subset:
#       POSTGRES_PASSWORD(_FILE), POSTGRES_USER(_FILE) [postgres],
#       POSTGRES_DB(_FILE) [= user], POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD
#       [scram-sha-256], PGDATA [/var/lib/postgresql/data, a VOLUME],
#       /docker-entrypoint-initdb.d/*.sh|*.sql on first start; initdb only when
#       PGDATA is empty; listens on *:5432; the server runs as `postgres` (setpriv),
#       SIGTERM (docker stop) becomes SIGINT, a fast clean shutdown, as the official
#       image's STOPSIGNAL SIGINT (docker import cannot set one); pg_isready, psql on PATH.
#       (No pgvector: bookworm has no postgresql-15-pgvector package.)
#   127.0.0.1:5000/webui-test/redis:7  redis-server 7.0 in the foreground on *:6379,
#       --protected-mode no (as the official image), dir /data (a VOLUME),
#       appendonly off, runs as `redis`; redis-cli on PATH.
#
# Cache: the images carry the label webui.test.spec (a hash of this script);
# nothing is built when the registry has both with the current hash. The rootfs
# tarball is kept in /var/lib/webui-ci/db-images/ (keyed by the same hash), so a
# re-push after a registry wipe is an import, not a debootstrap. Local copies are
# removed after the push: tests pull for real.
#
# Knobs: WEBUI_TEST_REGISTRY [127.0.0.1:5000], WEBUI_TEST_DOCKER_CLI,
#        WEBUI_TEST_DEBIAN_MIRROR [the host's apt mirror, else deb.debian.org],
#        WEBUI_TEST_FORCE_IMAGES=1 (rebuild and push even if up to date).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

REGISTRY=${WEBUI_TEST_REGISTRY:-127.0.0.1:5000}
PG_REF=webui-test/postgres:15
REDIS_REF=webui-test/redis:7
STATE=/var/lib/webui-ci/db-images
PACKAGES=(postgresql-15 postgresql-client-15 redis-server redis-tools)
SPEC=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
ROOTFS_TAR=$STATE/rootfs-$SPEC.tar

T0=$SECONDS
log() { printf 'db-images: %s\n' "$*" >&2; }
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
docker() { "$DOCKER" "$@"; }

emit_env() {
	printf 'export WEBUI_TEST_POSTGRES_IMAGE=%s\n' "$REGISTRY/$PG_REF"
	printf 'export WEBUI_TEST_REDIS_IMAGE=%s\n' "$REGISTRY/$REDIS_REF"
}

# The webui.test.spec label of repo:tag in the registry (empty if absent).
remote_spec() {
	local repo=${1%:*} tag=${1##*:} manifest digest
	manifest=$(curl -fsS --max-time 10 \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$REGISTRY/v2/$repo/manifests/$tag" 2>/dev/null) || return 0
	digest=$(jq -r '.config.digest // empty' <<<"$manifest")
	[[ -n $digest ]] || return 0
	curl -fsSL --max-time 10 "http://$REGISTRY/v2/$repo/blobs/$digest" 2>/dev/null |
		jq -r '.config.Labels["webui.test.spec"] // empty' || true
}

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
curl -fsS --max-time 10 -o /dev/null "http://$REGISTRY/v2/" ||
	die "the registry does not answer on http://$REGISTRY/v2/ (tests/infra/setup.sh starts it)"
mkdir -p "$STATE"
# One builder at a time (several setup.sh runs may overlap).
exec 9>"$STATE/.lock"
flock 9

if [[ ${WEBUI_TEST_FORCE_IMAGES:-} != 1 && $(remote_spec "$PG_REF") == "$SPEC" &&
	$(remote_spec "$REDIS_REF") == "$SPEC" ]]; then
	log "$REGISTRY/$PG_REF and $REGISTRY/$REDIS_REF are up to date (spec $SPEC), skipping (${SECONDS}s)"
	emit_env
	exit 0
fi

# ---------------------------------------------------------------- entrypoints
write_entrypoints() { # dir
	cat >"$1/postgres-entrypoint.sh" <<-'EOF'
		#!/bin/bash
		# The official postgres image's docker-entrypoint.sh, the part webui uses.
		set -Eeuo pipefail
		# file_env VAR [DEFAULT]: VAR or the contents of the file named by VAR_FILE.
		file_env() {
			local var=$1 file_var=${1}_FILE def=${2:-} val
			if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
				echo "error: both $var and $file_var are set (but are exclusive)" >&2
				exit 1
			fi
			val=$def
			if [[ -n ${!var:-} ]]; then
				val=${!var}
			elif [[ -n ${!file_var:-} ]]; then
				val=$(<"${!file_var}")
			fi
			export "$var"="$val"
			unset "$file_var"
		}
		if [[ ${1:0:1} == - ]]; then set -- postgres "$@"; fi
		if [[ $1 == postgres && $(id -u) == 0 ]]; then
			mkdir -p "$PGDATA" /var/run/postgresql
			chown -R postgres:postgres "$PGDATA" /var/run/postgresql
			chmod 700 "$PGDATA"
			chmod 3777 /var/run/postgresql
			exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
		fi
		if [[ $1 == postgres ]]; then
			file_env POSTGRES_PASSWORD
			file_env POSTGRES_USER postgres
			file_env POSTGRES_DB "$POSTGRES_USER"
			file_env POSTGRES_INITDB_ARGS
			auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
			if [[ ! -s $PGDATA/PG_VERSION ]]; then
				if [[ -z $POSTGRES_PASSWORD && $auth != trust ]]; then
					echo "Error: Database is uninitialized and superuser password is not specified." >&2
					echo "       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value." >&2
					exit 1
				fi
				# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list
				initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
					-D "$PGDATA" $POSTGRES_INITDB_ARGS
				printf '\nlisten_addresses = '"'*'"'\n' >>"$PGDATA/postgresql.conf"
				printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
				pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
				export PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD
				if [[ $POSTGRES_DB != postgres ]]; then
					# psql interpolates :"db" (quoted identifier) in its input only, not in -c.
					printf 'CREATE DATABASE :"db";\n' |
						psql -v ON_ERROR_STOP=1 --dbname postgres --set db="$POSTGRES_DB" >/dev/null
				fi
				for f in /docker-entrypoint-initdb.d/*; do
					case $f in
					*.sh) echo "running $f" && . "$f" ;;
					*.sql) echo "running $f" && psql -v ON_ERROR_STOP=1 --dbname "$POSTGRES_DB" -f "$f" ;;
					*) ;;
					esac
				done
				unset PGPASSWORD
				pg_ctl -D "$PGDATA" -m fast -w stop
				echo "PostgreSQL init process complete; ready for start up."
			else
				echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
			fi
			# The official image stops with STOPSIGNAL SIGINT (fast shutdown); `docker
			# import` cannot set a stop signal, so turn docker stop's SIGTERM into SIGINT.
			"$@" &
			pid=$!
			trap 'kill -INT "$pid" 2>/dev/null' TERM INT
			trap 'kill -QUIT "$pid" 2>/dev/null' QUIT
			rc=0
			wait "$pid" || rc=$?
			# A trapped signal interrupts wait: wait again for the server's own exit.
			while kill -0 "$pid" 2>/dev/null; do
				rc=0
				wait "$pid" || rc=$?
			done
			exit "$rc"
		fi
		exec "$@"
	EOF
	cat >"$1/redis-entrypoint.sh" <<-'EOF'
		#!/bin/bash
		# The official redis image's docker-entrypoint.sh, the part webui uses.
		set -euo pipefail
		if [[ ${1:0:1} == - || $1 == *.conf ]]; then set -- redis-server "$@"; fi
		if [[ $1 == redis-server && $(id -u) == 0 ]]; then
			find . \! -user redis -exec chown redis '{}' +
			exec setpriv --reuid=redis --regid=redis --init-groups "$BASH_SOURCE" "$@"
		fi
		if [[ $1 == redis-server ]]; then
			# As the official image: no config file => reachable from other containers.
			config_given=0
			[[ ${2:-} == *.conf ]] && config_given=1
			if ((!config_given)); then set -- "$@" --protected-mode no; fi
		fi
		umask 0077
		exec "$@"
	EOF
	chmod 755 "$1/postgres-entrypoint.sh" "$1/redis-entrypoint.sh"
}

# ---------------------------------------------------------------- rootfs
build_rootfs() {
	local stage mirror t=$SECONDS m
	command -v debootstrap >/dev/null || die "debootstrap not installed (tests/infra/setup.sh installs it)"
	mirror=${WEBUI_TEST_DEBIAN_MIRROR:-}
	if [[ -z $mirror ]]; then
		mirror=$(grep -hs -m1 -oE '^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?' \
			/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
			grep -oE 'https?://[^[:space:]]+' | head -n 1 || true)
		mirror=${mirror:-http://deb.debian.org/debian}
	fi
	rm -rf --one-file-system "$STATE"/stage.* "$STATE"/rootfs-*.tar*
	stage=$(mktemp -d "$STATE/stage.XXXXXX")
	# shellcheck disable=SC2064 # expand $stage now
	trap "for m in proc; do mountpoint -q '$stage/\$m' && umount -l '$stage/\$m'; done; rm -rf --one-file-system '$stage'" EXIT
	log "debootstrap --variant=minbase bookworm from $mirror"
	debootstrap --variant=minbase bookworm "$stage" "$mirror" >"$STATE/debootstrap.log" 2>&1 || {
		tail -n 30 "$STATE/debootstrap.log" >&2
		die "debootstrap failed (see $STATE/debootstrap.log)"
	}
	log "   debootstrap done in $((SECONDS - t))s"
	t=$SECONDS
	log "apt-get install ${PACKAGES[*]} (chroot)"
	# No init system: maintainer scripts must not start services.
	printf '#!/bin/sh\nexit 101\n' >"$stage/usr/sbin/policy-rc.d"
	chmod 755 "$stage/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$stage/etc/resolv.conf"
	mount -t proc proc "$stage/proc"
	chroot "$stage" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
		/bin/sh -euc "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES[*]}" \
		>"$STATE/apt.log" 2>&1 || {
		tail -n 30 "$STATE/apt.log" >&2
		die "apt-get install in the chroot failed (see $STATE/apt.log)"
	}
	umount "$stage/proc"
	# Debian's cluster layout is not used: PGDATA is initialised by the entrypoint.
	rm -rf "$stage/var/lib/postgresql/15" "$stage/etc/postgresql/15"
	rm -f "$stage/usr/sbin/policy-rc.d"
	: >"$stage/etc/resolv.conf"
	rm -rf "$stage"/var/cache/apt/archives/*.deb "$stage"/var/cache/apt/*.bin "$stage"/var/lib/apt/lists/* \
		"$stage"/var/log/*.log "$stage"/usr/share/doc/* "$stage"/usr/share/man/* "$stage"/usr/share/locale/*
	# JIT (LLVM, 130 MB) only: without its provider PostgreSQL runs with JIT unavailable.
	rm -rf "$stage"/usr/lib/postgresql/15/lib/llvmjit* "$stage"/usr/lib/postgresql/15/lib/bitcode \
		"$stage"/usr/lib/x86_64-linux-gnu/libLLVM-14.so* "$stage"/usr/lib/x86_64-linux-gnu/libz3.so*
	mkdir -p "$stage/var/lib/postgresql/data" "$stage/data" "$stage/docker-entrypoint-initdb.d"
	chroot "$stage" chown postgres:postgres /var/lib/postgresql/data
	chroot "$stage" chown redis:redis /data
	chmod 700 "$stage/var/lib/postgresql/data"
	write_entrypoints "$stage/usr/local/bin"
	log "   apt-get done in $((SECONDS - t))s; rootfs $(du -sh "$stage" | cut -f1)"
	tar --numeric-owner --sort=name -C "$stage" -cf "$ROOTFS_TAR.tmp" .
	mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
	rm -rf --one-file-system "$stage"
	trap - EXIT
	log "rootfs tarball $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

if [[ -f $ROOTFS_TAR ]]; then
	log "rootfs tarball cached ($ROOTFS_TAR), skipping debootstrap"
else
	build_rootfs
fi

# ---------------------------------------------------------------- images
PG_PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
import_push() { # ref changes...
	local full=$REGISTRY/$1 out
	shift
	log "importing and pushing $full"
	docker import "$@" --change "LABEL webui.test.spec=$SPEC" "$ROOTFS_TAR" "$full" >/dev/null
	out=$(docker push "$full" 2>&1) || {
		printf '%s\n' "$out" >&2
		die "docker push $full failed"
	}
	docker rmi "$full" >/dev/null 2>&1 || log "note: could not remove local $full (in use?)"
}
t=$SECONDS
import_push "$PG_REF" \
	--change "ENV PATH=$PG_PATH" \
	--change 'ENV LANG=C.UTF-8' \
	--change 'ENV PGDATA=/var/lib/postgresql/data' \
	--change 'VOLUME /var/lib/postgresql/data' \
	--change 'EXPOSE 5432' \
	--change 'ENTRYPOINT ["postgres-entrypoint.sh"]' \
	--change 'CMD ["postgres"]'
import_push "$REDIS_REF" \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'WORKDIR /data' \
	--change 'VOLUME /data' \
	--change 'EXPOSE 6379' \
	--change 'ENTRYPOINT ["redis-entrypoint.sh"]' \
	--change 'CMD ["redis-server"]'
log "   pushed in $((SECONDS - t))s"
log "done in $((SECONDS - T0))s"
emit_env
