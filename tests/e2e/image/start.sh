#!/bin/sh
# Start script of the e2e Open WebUI image, like the official image's
# backend/start.sh: HOST/PORT (default 0.0.0.0:8080), DATA_DIR, a secret key kept
# in the data dir when none is given, uvicorn trusting X-Forwarded-* (the proxy is
# on the bridge network's gateway, not on loopback).
set -e
cd /app/backend
: "${HOST:=0.0.0.0}" "${PORT:=8080}" "${DATA_DIR:=/app/backend/data}"
export DATA_DIR
mkdir -p "$DATA_DIR"
if [ -z "${WEBUI_SECRET_KEY:-}" ] && [ -z "${WEBUI_JWT_SECRET_KEY:-}" ]; then
	KEY_FILE="$DATA_DIR/.webui_secret_key"
	[ -s "$KEY_FILE" ] || head -c 24 /dev/urandom | base64 >"$KEY_FILE"
	WEBUI_SECRET_KEY=$(cat "$KEY_FILE")
	export WEBUI_SECRET_KEY
fi
exec /app/venv/bin/uvicorn open_webui.main:app --host "$HOST" --port "$PORT" \
	--forwarded-allow-ips '*' --workers "${UVICORN_WORKERS:-1}" --ws auto
