#!/bin/sh
# Install webui (Open WebUI in Docker behind its own HTTPS proxy) on a Linux server.
#
#   curl -fsSL https://github.com/webui-dev/webui/releases/latest/download/install.sh | sh
#   curl -fsSL .../install.sh | sh -s -- --domain chat.example.com --email admin@example.com
#   sh install.sh --dry-run            # print every step, change nothing
#
# Steps (each one says what it did; re-running upgrades in place and is otherwise a no-op):
#   1. checks the system: Linux on x86_64 or aarch64; Debian/Ubuntu or the Fedora/RHEL
#      family; root, or sudo; curl or wget; a sha256 tool.
#   2. unless --no-docker: installs Docker when it is missing and starts it. Debian and
#      Ubuntu: the distribution's docker.io; Fedora: the distribution's moby-engine;
#      Amazon Linux: its docker; RHEL, CentOS, Rocky, Alma and Oracle Linux ship no
#      Docker, so there it is docker-ce from Docker's own repository.
#   3. downloads webui-<version>-<arch>-linux and its .sha256, verifies the checksum and
#      installs /usr/local/bin/webui atomically (a temporary file in the same directory,
#      checked and then renamed over the old one): a failed, truncated or tampered
#      download leaves any previous version in place. Same checksum: nothing is touched.
#   4. installs the systemd unit /etc/systemd/system/webui.service, downloaded from the
#      same release as the binary (webui.service + webui.service.sha256, verified; the
#      file is assets/webui.service of the source tree, the one `webui service install`
#      writes). It is neither enabled nor started here; an existing unit is kept.
#   5. with --domain: runs `webui up -d --domain D [--email E]`; otherwise prints that
#      one next command.
#
# Options:
#   --version X     install version X (e.g. 0.2.0 or v0.2.0) instead of the latest
#   --domain D      finish with `webui up -d --domain D` (point D's DNS here first)
#   --email E       ACME account e-mail passed to `webui up` (needs --domain)
#   --no-docker     do not install or start Docker
#   --dry-run       print what would be done; downloads only the small version and
#                   checksum files, changes nothing
#   -h, --help      this help
# Environment:
#   WEBUI_VERSION       same as --version
#   WEBUI_DOWNLOAD_URL  release location [default: https://github.com/webui-dev/webui/releases,
#                       the project's release location]. A mirror must keep this layout:
#                         latest/download/LATEST                  the newest version, e.g. 0.2.0
#                         download/v<version>/webui-<version>-<arch>-linux
#                         download/v<version>/webui-<version>-<arch>-linux.sha256
#                         download/v<version>/webui.service
#                         download/v<version>/webui.service.sha256
#                       (scripts/dist.sh writes these files; upload them as the assets of
#                       the GitHub release v<version>.)
#
# A truncated download must never run half an installer: everything below is one
# function, webui_install, called on the very last line. A script cut anywhere before
# that line ends inside the function (a syntax error: nothing runs). The call passes a
# marker as its final argument and main refuses to run without it, so a script cut
# inside the last line does nothing either.

webui_install() {
	set -eu

	say() { printf 'webui-install: %s\n' "$*"; }
	warn() { printf 'webui-install: warning: %s\n' "$*" >&2; }
	die() {
		printf 'webui-install: error: %s\n' "$*" >&2
		exit 1
	}

	usage() {
		cat <<-'EOF'
	Install webui (Open WebUI in Docker behind its own HTTPS proxy) on this server.

	usage: sh install.sh [options]
	       curl -fsSL <release location>/latest/download/install.sh | sh -s -- [options]

	  --version X     install version X (e.g. 0.2.0) instead of the latest
	  --domain D      finish with `webui up -d --domain D` (point D's DNS here first)
	  --email E       ACME account e-mail passed to `webui up` (needs --domain)
	  --no-docker     do not install or start Docker
	  --dry-run       print what would be done, change nothing
	  -h, --help      this help

	environment: WEBUI_VERSION (as --version), WEBUI_DOWNLOAD_URL (release location,
	default https://github.com/webui-dev/webui/releases)
	EOF
	}

	# ------------------------------------------------------------------ helpers

	# Run a command as root: directly when we are root, through sudo otherwise; in a dry
	# run only print it.
	as_root() {
		if [ "$DRY_RUN" = 1 ]; then
			say "would run: ${SUDO:+$SUDO }$*"
			return 0
		fi
		if [ -n "$SUDO" ]; then
			"$SUDO" "$@"
		else
			"$@"
		fi
	}

	# Run a command as root, also in a dry run: for read-only queries, and for the
	# steps that a dry run never reaches.
	as_root_always() {
		if [ -n "$SUDO" ]; then
			"$SUDO" "$@"
		else
			"$@"
		fi
	}

	have() { command -v "$1" >/dev/null 2>&1; }

	# fetch URL FILE: download URL to FILE; non-zero on any HTTP or network error.
	fetch() {
		rm -f "$2"
		case $DOWNLOADER in
		curl)
			if [ "${1#https://}" != "$1" ]; then
				curl -fsSL --proto-redir '=https' --retry 3 --connect-timeout 20 -o "$2" "$1"
			else
				curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
			fi
			;;
		wget)
			wget -q --tries=3 --timeout=20 -O "$2" "$1" || {
				rm -f "$2"
				return 1
			}
			;;
		esac
	}

	# sha256_of FILE: print the lowercase hex SHA-256 of FILE.
	sha256_of() {
		case $SHA_TOOL in
		sha256sum) sha256sum "$1" ;;
		shasum) shasum -a 256 "$1" ;;
		openssl) openssl dgst -sha256 -r "$1" ;;
		esac | {
			read -r sha256_hex _ || true
			printf '%s\n' "$sha256_hex" | tr 'A-F' 'a-f'
		}
	}

	# expected_sha256 URL WHAT: fetch a .sha256 file (`<hex>  <name>`) and print the hex;
	# die (naming WHAT) when it is missing or malformed. Called as $(...): the caller
	# must add `|| exit 1`.
	expected_sha256() {
		fetch "$1" "$WORK_DIR/expected.sha256" ||
			die "could not download $1: no $2 there? (releases: $BASE_URL); nothing was changed"
		expected_hex=
		read -r expected_hex _ <"$WORK_DIR/expected.sha256" || true
		expected_hex=$(printf '%s' "$expected_hex" | tr 'A-F' 'a-f')
		case $expected_hex in
		*[!0-9a-f]* | "") die "$1 is not a sha256 file; nothing was changed" ;;
		esac
		[ "${#expected_hex}" -eq 64 ] || die "$1 is not a sha256 file; nothing was changed"
		printf '%s\n' "$expected_hex"
	}

	cleanup() {
		if [ -n "${STAGED_FILE:-}" ]; then
			as_root_always rm -f "$STAGED_FILE" || true
		fi
		if [ -n "${WORK_DIR:-}" ]; then
			rm -rf "$WORK_DIR" || true
		fi
	}

	# ------------------------------------------------------------------ checks

	detect_platform() {
		os_kernel=$(uname -s)
		[ "$os_kernel" = Linux ] || die "webui runs on Linux servers; this is $os_kernel"
		case $(uname -m) in
		x86_64 | amd64) ARCH=x86_64 ;;
		aarch64 | arm64) ARCH=aarch64 ;;
		*) die "no webui build for the $(uname -m) architecture (there are x86_64 and aarch64 builds)" ;;
		esac
	}

	os_field() {
		sed -n "s/^$1=//p" "$OS_RELEASE" | head -n 1 | tr -d "\"'"
	}

	detect_os() {
		OS_RELEASE=/etc/os-release
		[ -r "$OS_RELEASE" ] || OS_RELEASE=/usr/lib/os-release
		OS_ID=unknown
		OS_LIKE=
		OS_NAME="an unknown Linux distribution (no /etc/os-release)"
		if [ -r "$OS_RELEASE" ]; then
			OS_ID=$(os_field ID)
			OS_LIKE=$(os_field ID_LIKE)
			OS_NAME=$(os_field PRETTY_NAME)
			[ -n "$OS_NAME" ] || OS_NAME=$OS_ID
		fi
		DOCKER_REPO=
		case $OS_ID in
		debian | ubuntu | raspbian) OS_FAMILY=debian ;;
		fedora) OS_FAMILY=fedora ;;
		rhel) OS_FAMILY=rhel DOCKER_REPO=rhel ;;
		centos | rocky | almalinux | ol) OS_FAMILY=rhel DOCKER_REPO=centos ;;
		amzn) OS_FAMILY=amzn ;;
		*)
			case " $OS_LIKE " in
			*" debian "* | *" ubuntu "*) OS_FAMILY=debian ;;
			*" rhel "* | *" centos "*) OS_FAMILY=rhel DOCKER_REPO=centos ;;
			*" fedora "*) OS_FAMILY=fedora ;;
			*) OS_FAMILY=unsupported ;;
			esac
			;;
		esac
		if [ "$OS_FAMILY" = unsupported ]; then
			if [ "$NO_DOCKER" = 1 ]; then
				warn "$OS_NAME is not a supported distribution (Debian/Ubuntu, Fedora/RHEL family); installing only the webui binary as asked (--no-docker)"
			else
				die "$OS_NAME is not supported by this installer: it knows Debian/Ubuntu and the Fedora/RHEL family. Install Docker yourself, then re-run with --no-docker to install only webui."
			fi
		fi
		say "system: $OS_NAME ($ARCH)"
	}

	detect_privileges() {
		SUDO=
		if [ "$(id -u)" -eq 0 ]; then
			return 0
		fi
		if have sudo; then
			SUDO=sudo
			say "not running as root: using sudo for the steps that need it"
			return 0
		fi
		if [ "$DRY_RUN" = 1 ]; then
			warn "not root and sudo is not installed: a real run would stop here"
			return 0
		fi
		die "this installer needs root (it writes /usr/local/bin and /etc/systemd/system), and sudo is not installed. Run it as root, e.g. \`su -\` first, or install sudo."
	}

	detect_tools() {
		if have curl; then
			DOWNLOADER=curl
		elif have wget; then
			DOWNLOADER=wget
		else
			case $OS_FAMILY in
			debian) tools_hint="apt-get install curl" ;;
			fedora | rhel | amzn) tools_hint="dnf install curl" ;;
			*) tools_hint="install curl" ;;
			esac
			die "neither curl nor wget is installed; one is needed to download webui ($tools_hint, then re-run)"
		fi
		if have sha256sum; then
			SHA_TOOL=sha256sum
		elif have shasum; then
			SHA_TOOL=shasum
		elif have openssl; then
			SHA_TOOL=openssl
		else
			die "no sha256 tool (sha256sum, shasum or openssl) to verify the download with"
		fi
		have mktemp || die "mktemp is missing (coreutils)"
	}

	# ------------------------------------------------------------------ docker

	docker_answers() {
		as_root_always docker info >/dev/null 2>&1
	}

	install_docker() {
		if have docker; then
			say "Docker is installed: $(docker --version 2>/dev/null || echo docker)"
		else
			case $OS_FAMILY in
			debian)
				say "installing Docker from $OS_NAME's packages (docker.io)"
				as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
				as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io </dev/null
				;;
			fedora | amzn)
				rpm_tool=dnf
				if ! have dnf && have yum; then rpm_tool=yum; fi
				docker_pkg=moby-engine
				if [ "$OS_FAMILY" = amzn ]; then docker_pkg=docker; fi
				say "installing Docker from $OS_NAME's packages ($docker_pkg)"
				as_root "$rpm_tool" install -y "$docker_pkg" </dev/null
				;;
			rhel)
				rpm_tool=dnf
				if ! have dnf && have yum; then rpm_tool=yum; fi
				repo_url=https://download.docker.com/linux/$DOCKER_REPO/docker-ce.repo
				say "$OS_NAME ships no Docker: installing docker-ce from Docker's repository ($repo_url)"
				if [ "$DRY_RUN" = 1 ]; then
					say "would download $repo_url to /etc/yum.repos.d/docker-ce.repo"
				else
					fetch "$repo_url" "$WORK_DIR/docker-ce.repo" || die "could not download $repo_url"
					as_root cp "$WORK_DIR/docker-ce.repo" /etc/yum.repos.d/docker-ce.repo
					as_root chmod 644 /etc/yum.repos.d/docker-ce.repo
				fi
				as_root "$rpm_tool" install -y docker-ce docker-ce-cli containerd.io </dev/null
				;;
			esac
			if [ "$DRY_RUN" != 1 ]; then
				have docker || die "Docker was installed but the docker command is not on PATH"
				say "installed $(docker --version 2>/dev/null || echo Docker)"
				CHANGED="${CHANGED}Docker installed; "
			fi
		fi

		if have docker && docker_answers; then
			say "Docker engine is running"
			return 0
		fi
		if [ -d /run/systemd/system ]; then
			say "starting Docker and enabling it at boot"
			if ! as_root systemctl enable --now docker; then
				warn "could not start Docker (see: systemctl status docker); webui up needs it"
				return 0
			fi
		elif have service || [ "$DRY_RUN" = 1 ]; then
			say "starting Docker (no systemd here: with the service command)"
			if ! as_root service docker start; then
				warn "could not start Docker (service docker start failed); webui up needs it"
				return 0
			fi
		else
			warn "no systemd and no service command: start dockerd yourself; webui up needs it"
			return 0
		fi
		if [ "$DRY_RUN" = 1 ]; then return 0; fi
		CHANGED="${CHANGED}Docker started; "
		docker_wait=0
		until docker_answers; do
			docker_wait=$((docker_wait + 1))
			if [ "$docker_wait" -ge 30 ]; then
				warn "the Docker engine does not answer yet (see: systemctl status docker); webui up needs it"
				return 0
			fi
			sleep 1
		done
		say "Docker engine is running"
	}

	# ------------------------------------------------------------------ webui

	resolve_version() {
		if [ -n "$WANT_VERSION" ]; then
			VERSION_SOURCE="pinned"
		else
			VERSION_SOURCE="latest"
			fetch "$BASE_URL/latest/download/LATEST" "$WORK_DIR/LATEST" ||
				die "could not find the latest webui version at $BASE_URL/latest/download/LATEST (network? or pin one with --version X)"
			read -r WANT_VERSION <"$WORK_DIR/LATEST" || true
		fi
		WANT_VERSION=${WANT_VERSION#v}
		case $WANT_VERSION in
		"" | *[!0-9A-Za-z.+-]*) die "not a webui version: '$WANT_VERSION'" ;;
		esac
		ASSET=webui-$WANT_VERSION-$ARCH-linux
		RELEASE_URL=$BASE_URL/download/v$WANT_VERSION
		say "webui $WANT_VERSION ($VERSION_SOURCE) for $ARCH from $RELEASE_URL"
	}

	# Download and verify everything before changing anything.
	prepare_downloads() {
		BIN_PATH=$BIN_DIR/webui
		BIN_SHA=$(expected_sha256 "$RELEASE_URL/$ASSET.sha256" "webui $WANT_VERSION for $ARCH") || exit 1
		INSTALL_BIN=1
		if [ -f "$BIN_PATH" ] && [ "$(sha256_of "$BIN_PATH")" = "$BIN_SHA" ]; then
			INSTALL_BIN=0
		fi
		if [ "$INSTALL_BIN" = 1 ]; then
			if [ "$DRY_RUN" = 1 ]; then
				say "would download $RELEASE_URL/$ASSET and check its sha256 $BIN_SHA"
			else
				say "downloading $RELEASE_URL/$ASSET"
				fetch "$RELEASE_URL/$ASSET" "$WORK_DIR/$ASSET" ||
					die "download of $RELEASE_URL/$ASSET failed; nothing was changed"
				got_sha=$(sha256_of "$WORK_DIR/$ASSET")
				if [ "$got_sha" != "$BIN_SHA" ]; then
					die "checksum mismatch for $ASSET: expected sha256 $BIN_SHA, got $got_sha. Refusing to install it; nothing was changed${PREVIOUS:+ ($BIN_PATH is still $PREVIOUS)}."
				fi
				say "sha256 verified: $BIN_SHA"
			fi
		fi

		UNIT_SHA=$(expected_sha256 "$RELEASE_URL/webui.service.sha256" "systemd unit") || exit 1
		if [ -f "$UNIT_PATH" ]; then
			if [ "$(sha256_of "$UNIT_PATH")" = "$UNIT_SHA" ]; then
				UNIT_STATE=current
			else
				UNIT_STATE=kept
			fi
		else
			UNIT_STATE=new
			if [ "$DRY_RUN" != 1 ]; then
				fetch "$RELEASE_URL/webui.service" "$WORK_DIR/webui.service" ||
					die "download of $RELEASE_URL/webui.service failed; nothing was changed"
				[ "$(sha256_of "$WORK_DIR/webui.service")" = "$UNIT_SHA" ] ||
					die "checksum mismatch for webui.service; refusing to install it; nothing was changed"
			fi
		fi
	}

	# install_file SRC DEST MODE: copy SRC next to DEST, check it, rename it over DEST.
	install_file() {
		as_root_always mkdir -p "$(dirname "$2")"
		STAGED_FILE=$(as_root_always mktemp "$(dirname "$2")/.$(basename "$2").XXXXXX") ||
			die "cannot write to $(dirname "$2")"
		as_root_always cp "$1" "$STAGED_FILE"
		as_root_always chmod "$3" "$STAGED_FILE"
		staged_sha=$(sha256_of "$STAGED_FILE")
		[ "$staged_sha" = "$(sha256_of "$1")" ] ||
			die "the copy of $(basename "$2") in $(dirname "$2") is damaged (disk full?); $2 was not changed"
	}

	commit_staged() {
		as_root_always mv -f "$STAGED_FILE" "$1"
		STAGED_FILE=
	}

	install_binary() {
		if [ "$INSTALL_BIN" = 0 ]; then
			say "$BIN_PATH is already webui $WANT_VERSION (sha256 matches), not touched"
			return 0
		fi
		if [ "$DRY_RUN" = 1 ]; then
			say "would install it to $BIN_PATH (atomically: temporary file in $BIN_DIR, then rename)"
			return 0
		fi
		install_file "$WORK_DIR/$ASSET" "$BIN_PATH" 755
		if ! staged_version=$("$STAGED_FILE" --version 2>&1); then
			die "the downloaded webui does not run on this system ($staged_version); $BIN_PATH was not changed"
		fi
		commit_staged "$BIN_PATH"
		if [ -n "$PREVIOUS" ]; then
			say "upgraded $BIN_PATH: $PREVIOUS -> $staged_version"
		else
			say "installed $BIN_PATH: $staged_version"
		fi
		CHANGED="${CHANGED}webui $WANT_VERSION installed; "
	}

	install_unit() {
		case $UNIT_STATE in
		current)
			say "systemd unit $UNIT_PATH is up to date"
			return 0
			;;
		kept)
			say "kept the existing $UNIT_PATH (it differs from the release's; \`webui service install\` rewrites it)"
			return 0
			;;
		esac
		if [ "$DRY_RUN" = 1 ]; then
			say "would install the systemd unit $UNIT_PATH from $RELEASE_URL/webui.service (not enabled, not started)"
			return 0
		fi
		install_file "$WORK_DIR/webui.service" "$UNIT_PATH" 644
		commit_staged "$UNIT_PATH"
		if [ -d /run/systemd/system ] && have systemctl; then
			as_root systemctl daemon-reload
		fi
		say "installed the systemd unit $UNIT_PATH (not enabled, not started: \`webui up -d\` does that)"
		CHANGED="${CHANGED}systemd unit installed; "
	}

	finish() {
		up_cmd="webui up -d --domain ${DOMAIN:-chat.example.com}"
		if [ -n "$EMAIL" ]; then
			up_cmd="$up_cmd --email $EMAIL"
		elif [ -z "$DOMAIN" ]; then
			up_cmd="$up_cmd --email admin@example.com"
		fi
		if [ "$DRY_RUN" != 1 ]; then
			if [ -z "$CHANGED" ]; then
				say "webui $WANT_VERSION is already installed, nothing to do"
			else
				say "done: ${CHANGED%; }"
			fi
		fi
		if [ -n "$DOMAIN" ]; then
			say "starting: ${SUDO:+$SUDO }$BIN_PATH ${up_cmd#webui }"
			set -- up -d --domain "$DOMAIN"
			if [ -n "$EMAIL" ]; then set -- "$@" --email "$EMAIL"; fi
			if ! as_root "$BIN_PATH" "$@"; then
				die "\`webui up\` failed (see above); webui itself is installed: fix the problem and run: ${SUDO:+$SUDO }$up_cmd"
			fi
		else
			say "next, point your domain's DNS at this server and run:"
			printf '\n    %s%s\n\n' "${SUDO:+$SUDO }" "$up_cmd"
		fi
		if [ "$DRY_RUN" = 1 ]; then
			say "dry run finished: nothing was changed"
		fi
	}

	# ------------------------------------------------------------------ main

	main() {
		# The last argument must be the marker the last line of this file passes: without
		# it the script was cut short and nothing may run.
		last_arg=
		eval "last_arg=\${$#}"
		if [ "$last_arg" != --webui-install-script-end ]; then
			die "this install script is incomplete (truncated download?); nothing was done. Download it again."
		fi

		# The project's release location (GitHub releases of the webui repository).
		default_download_url=https://github.com/webui-dev/webui/releases
		WANT_VERSION=${WEBUI_VERSION:-}
		BASE_URL=${WEBUI_DOWNLOAD_URL:-$default_download_url}
		DOMAIN=
		EMAIL=
		NO_DOCKER=0
		DRY_RUN=0
		while [ "$#" -gt 1 ]; do
			case $1 in
			--version | --domain | --email)
				[ "$#" -gt 2 ] || die "$1 needs a value"
				case $1 in
				--version) WANT_VERSION=$2 ;;
				--domain) DOMAIN=$2 ;;
				--email) EMAIL=$2 ;;
				esac
				shift
				;;
			--version=*) WANT_VERSION=${1#*=} ;;
			--domain=*) DOMAIN=${1#*=} ;;
			--email=*) EMAIL=${1#*=} ;;
			--no-docker) NO_DOCKER=1 ;;
			--dry-run) DRY_RUN=1 ;;
			-h | --help)
				usage
				return 0
				;;
			*) die "unknown option '$1' (see --help)" ;;
			esac
			shift
		done
		case $DOMAIN in -* | *[[:space:]]*) die "not a domain name: '$DOMAIN'" ;; esac
		case $EMAIL in -* | *[[:space:]]*) die "not an e-mail address: '$EMAIL'" ;; esac
		[ -z "$EMAIL" ] || [ -n "$DOMAIN" ] || die "--email needs --domain"
		BASE_URL=${BASE_URL%/}
		BIN_DIR=/usr/local/bin
		BIN_PATH=$BIN_DIR/webui
		UNIT_PATH=/etc/systemd/system/webui.service
		CHANGED=
		STAGED_FILE=
		WORK_DIR=

		if [ "$DRY_RUN" = 1 ]; then say "dry run: printing the steps, changing nothing"; fi
		detect_platform
		detect_os
		detect_privileges
		detect_tools

		trap cleanup EXIT
		trap 'exit 130' INT
		trap 'exit 143' TERM
		WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/webui-install.XXXXXX") || die "cannot create a temporary directory"

		PREVIOUS=
		if [ -x "$BIN_DIR/webui" ]; then
			PREVIOUS=$("$BIN_DIR/webui" --version 2>/dev/null | head -n 1) || PREVIOUS=
			[ -n "$PREVIOUS" ] || PREVIOUS="an unknown version"
			say "found $BIN_DIR/webui: $PREVIOUS"
		fi

		resolve_version
		prepare_downloads
		if [ "$NO_DOCKER" = 1 ]; then
			say "skipping Docker (--no-docker); \`webui up\` needs a running Docker engine"
		else
			install_docker
		fi
		install_binary
		install_unit
		finish
	}

	main "$@"
}

webui_install "$@" --webui-install-script-end
