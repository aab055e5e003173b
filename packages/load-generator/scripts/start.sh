#!/bin/bash
# Called as: start.sh WORK_DIR ENV_FILE (ADR-007, section 4). Starts the load generator in
# the background against API_SERVER_ADDR, TARGET_ADDR or ECHO_SERVER_ADDR from ENV_FILE, and
# records its pid.
set -eu
WORK_DIR="$1"
ENV_FILE="$2"
# shellcheck disable=SC1090
source "$ENV_FILE"
cd "$WORK_DIR"
# An HTTP API (API_SERVER_ADDR, as a dependent of `api-server`) gets PUT requests; an echo
# service gets lines.
mode=lines
target="${TARGET_ADDR:-${ECHO_SERVER_ADDR:-}}"
if [ -n "${API_SERVER_ADDR:-}" ]; then
    mode=http
    target="$API_SERVER_ADDR"
fi
if [ -z "$target" ]; then
    echo "start.sh: $ENV_FILE sets none of API_SERVER_ADDR, TARGET_ADDR, ECHO_SERVER_ADDR" >&2
    exit 1
fi
interval="$(sed -n 's/^interval *= *//p' config/load-generator.conf 2>/dev/null || true)"
mkdir -p logs
setsid ./bin/load-generator "$target" stats "${interval:-0.1}" "$mode" >logs/service.log 2>&1 </dev/null &
echo $! >service.pid
