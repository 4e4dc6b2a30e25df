#!/usr/bin/env bash
# Start, stop or inspect a local Redis server for the Celery executor's tests and for local scale-out runs.
#
#   scripts/redis.sh start    # install redis-server if missing, start it on 127.0.0.1:<free port>, print URLs
#   scripts/redis.sh status   # print the URL and exit 0 when running, exit 3 when not
#   scripts/redis.sh stop     # shut it down (the append-only file is kept, so a restart restores the queues)
#
# Every command is idempotent: `start` on a running server only prints its URL again, `stop` on a stopped one
# does nothing. The server is daemonized, with its pid file, log, data and chosen port under
# ${SHOPFUSION_RUN:-/tmp/shopfusion-run}/redis. A restart reuses the previous port when it is still free, so
# URLs handed to workers stay valid across a broker restart. Set SHOPFUSION_REDIS_PORT to pin the port.
#
# `start` and `status` print, on stdout, the one line the tests read (scripts/services.sh exports it):
#   SHOPFUSION_TEST_REDIS_URL=redis://127.0.0.1:PORT
# and, on stderr with the other diagnostics, the settings to give workers and the executor
# (SHOPFUSION_CELERY_BROKER_URL=redis://127.0.0.1:PORT/0, SHOPFUSION_CELERY_RESULT_BACKEND=.../1). They are
# not on stdout so that exporting the output does not change the settings every test process loads.
set -euo pipefail

RUN_DIR="${SHOPFUSION_RUN:-/tmp/shopfusion-run}/redis"
PID_FILE="$RUN_DIR/redis.pid"
PORT_FILE="$RUN_DIR/port"
LOG_FILE="$RUN_DIR/redis.log"

log() { echo "redis.sh: $*" >&2; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

current_port() { cat "$PORT_FILE" 2>/dev/null || true; }

pong() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true)" == "PONG" ]]; }

print_urls() {
    local url="redis://127.0.0.1:$1"
    echo "SHOPFUSION_TEST_REDIS_URL=$url"
    log "for workers and the Celery executor: SHOPFUSION_CELERY_BROKER_URL=$url/0" \
        "SHOPFUSION_CELERY_RESULT_BACKEND=$url/1"
}

ensure_installed() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    log "redis-server not found: installing the Debian package"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q redis-server >&2; then
        apt-get update -q >&2
        apt-get install -y -q redis-server >&2
    fi
}

pick_port() {
    if [[ -n "${SHOPFUSION_REDIS_PORT:-}" ]]; then
        echo "$SHOPFUSION_REDIS_PORT"
        return
    fi
    local previous
    previous="$(current_port)"
    if [[ -n "$previous" ]] && ! port_in_use "$previous"; then
        echo "$previous"
        return
    fi
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 20000))
        if ! port_in_use "$port"; then
            echo "$port"
            return
        fi
    done
    log "no free port found"
    return 1
}

start() {
    local pid port
    if pid="$(running_pid)" && pong "$(current_port)"; then
        print_urls "$(current_port)"
        return 0
    fi
    ensure_installed
    mkdir -p "$RUN_DIR"
    for attempt in 1 2 3 4 5; do
        port="$(pick_port)"
        # Append-only persistence: queued task messages survive a broker restart.
        redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$PID_FILE" \
            --dir "$RUN_DIR" --logfile "$LOG_FILE" --appendonly yes --appendfsync everysec --save "" \
            --protected-mode yes >&2 || true
        for _ in $(seq 1 100); do
            if pong "$port"; then
                echo "$port" >"$PORT_FILE"
                log "started on 127.0.0.1:$port (pid $(cat "$PID_FILE"), data in $RUN_DIR)"
                print_urls "$port"
                return 0
            fi
            sleep 0.1
        done
        log "attempt $attempt: no answer on port $port (see $LOG_FILE); trying again"
        if pid="$(running_pid)"; then kill "$pid" 2>/dev/null || true; fi
        [[ -n "${SHOPFUSION_REDIS_PORT:-}" ]] && break
        rm -f "$PORT_FILE"
    done
    log "could not start redis-server: see $LOG_FILE"
    return 1
}

stop() {
    local pid port
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    port="$(current_port)"
    if [[ -n "$port" ]]; then
        redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not shut down in 10 s: sending SIGTERM"
        kill "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

status() {
    local port
    port="$(current_port)"
    if running_pid >/dev/null && [[ -n "$port" ]] && pong "$port"; then
        log "running on 127.0.0.1:$port (pid $(cat "$PID_FILE"))"
        print_urls "$port"
        return 0
    fi
    log "not running"
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
