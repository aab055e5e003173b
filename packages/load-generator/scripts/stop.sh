#!/bin/bash
# Called as: stop.sh WORK_DIR (ADR-007, section 4). Stops the load generator and waits up to
# 5 seconds for it to exit.
set -u
WORK_DIR="$1"
cd "$WORK_DIR" || exit 1
[ -f service.pid ] || exit 0
pid="$(cat service.pid)"
kill "$pid" 2>/dev/null
for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { rm -f service.pid; exit 0; }
    sleep 0.1
done
kill -KILL "$pid" 2>/dev/null
rm -f service.pid
