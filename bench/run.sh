#!/usr/bin/env bash
# One command: install the peers and load tools (Debian packages), build webui, the
# stand-in upstream and the measuring client (release), then run bench/run.py, which
# starts everything on 127.0.0.1, measures, prints one table and stops what it started;
# then bench/up.py: `webui up`'s own start time and `webui status`'s wall time against a
# running stand-in stack (needs tests/infra/setup.sh's dockerd and images; skipped without).
#
#   bench/run.sh                      # ~6 minutes with the defaults
#   ROUNDS=1 DURATION=4 bench/run.sh  # quicker, noisier
#   ONLY=ka,h2 PROXIES=webui,nginx bench/run.sh
#   bench/run.sh --only up            # just `webui up`'s start time and `webui status` (bench/up.py)
#   bench/run.sh --only proxies       # just the proxy table (bench/run.py)
#
# Knobs are documented at the top of bench/run.py and in docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."

only=all
if [ "${1:-}" = "--only" ]; then
  case "${2:-}" in
    up | proxies) only=$2 ;;
    *) echo "bench/run.sh: --only takes 'up' or 'proxies', not '${2:-}'" >&2; exit 1 ;;
  esac
  shift 2
fi
if [ "$only" = up ]; then
  # The up section needs only webui itself (and the test infrastructure's stand-in image).
  [ -n "${WEBUI_BIN:-}" ] || cargo build --release --quiet --bin webui
  exec python3 bench/up.py
fi

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v caddy >/dev/null || need+=(caddy)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  # Caddy is in Debian 12 (bookworm); where it is not, the run leaves it out.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" ||
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]/caddy/}"
  # The packages start their services on install; the bench runs its own instances.
  for s in nginx caddy haproxy; do $SUDO service "$s" stop >/dev/null 2>&1 || true; done
fi

if [ -z "${WEBUI_BIN:-}" ]; then
  cargo build --release --quiet --bin webui --example standin
else
  cargo build --release --quiet --example standin
fi
cargo build --release --quiet --manifest-path bench/client/Cargo.toml

if [ "$only" = proxies ]; then
  exec python3 bench/run.py "$@"
fi
python3 bench/run.py "$@"
python3 bench/up.py
