#!/bin/bash
# Called as: health.sh WORK_DIR. Healthy (exit 0) when the load generator runs and at least
# one reply came back.
set -u
cd "${1:-.}" || exit 1
[ -f service.pid ] && kill -0 "$(cat service.pid)" 2>/dev/null || exit 1
[ -f stats ] || exit 1
read -r _ _ _ ok <stats || exit 1
[ "${ok:-0}" -gt 0 ]
