#!/usr/bin/env bash
# Run a real, local Elasticsearch 8.x node for tests, benchmarks and CI (no Docker needed).
#
#   scripts/elasticsearch.sh fetch    download the server zip from Maven Central (cached)
#   scripts/elasticsearch.sh start    start one node (idempotent) and print SHOPFUSION_TEST_ES_URL=...
#   scripts/elasticsearch.sh status   print the URL and health of the running node, exit 1 if none
#   scripts/elasticsearch.sh stop     stop the node (SIGTERM, then SIGKILL after a grace period)
#
#   eval "$(scripts/elasticsearch.sh start)"   # exports SHOPFUSION_TEST_ES_URL for pytest
#
# The server is Elastic's `integ-test-zip` distribution: the Elasticsearch server with only the
# transport-netty4, x-pack-core and x-pack-security modules, no bundled JDK. It therefore has no
# analysis-common module: only the `standard`, `simple`, `stop`, `whitespace` and `keyword` analyzers
# exist (no `english`), so set `analyzer = "standard"` against it. Production uses the full image
# (compose.yaml).
#
# Elasticsearch refuses to run as root, so when started by root the node runs as a dedicated system
# user (`shopfusion-es`, created on first use) through `runuser -u`. Everything lives under
# ${SHOPFUSION_CACHE:-$HOME/.cache/shopfusion}/elasticsearch:
#   elasticsearch-<ver>.zip   the artifact           elasticsearch-<ver>/  the unpacked server
#   run/                      config/ (a copy of the server's), data/, logs/, es.pid, es.port, es.url,
#                             console.log of the running node; each run dir is its own node
#
# Environment (all optional):
#   SHOPFUSION_ES_VERSION    server version (default below; must be 8.x: the Python client is pinned to 8)
#   SHOPFUSION_ES_PORT       HTTP port (default: a free port picked at start)
#   SHOPFUSION_ES_HEAP       JVM heap (default 512m)
#   SHOPFUSION_ES_JAVA_HOME  JDK to run it with (default: $ES_JAVA_HOME, else the Java 17 JDK, else `java`)
#   SHOPFUSION_ES_RUN_DIR    run directory (default: <cache>/run); set it to run a second node
#   SHOPFUSION_ES_SECURITY   `true` starts a disposable node (its data dir is wiped at start) with
#                            security on, HTTP without TLS, and the `elastic` user's password bootstrapped
#                            from SHOPFUSION_ES_PASSWORD (default `changeme-test`); use its own run dir
#   SHOPFUSION_ES_TIMEOUT    seconds to wait for yellow health (default 120)
set -euo pipefail
# runuser and useradd live in sbin, which a minimal PATH (env -i, cron, some CI runners) leaves out.
export PATH="$PATH:/usr/sbin:/sbin"

ES_VERSION="${SHOPFUSION_ES_VERSION:-8.19.21}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
CACHE_DIR="${SHOPFUSION_CACHE:-$HOME/.cache/shopfusion}/elasticsearch"
ZIP="$CACHE_DIR/elasticsearch-${ES_VERSION}.zip"
HOME_DIR="$CACHE_DIR/elasticsearch-${ES_VERSION}"
RUN_DIR="${SHOPFUSION_ES_RUN_DIR:-$CACHE_DIR/run}"
PID_FILE="$RUN_DIR/es.pid"
PORT_FILE="$RUN_DIR/es.port"
URL_FILE="$RUN_DIR/es.url"
ES_USER="shopfusion-es"
HEAP="${SHOPFUSION_ES_HEAP:-512m}"
TIMEOUT="${SHOPFUSION_ES_TIMEOUT:-120}"
SECURITY="${SHOPFUSION_ES_SECURITY:-false}"
PASSWORD="${SHOPFUSION_ES_PASSWORD:-changeme-test}"

log() { echo "elasticsearch.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

java_home() {
    if [[ -n "${SHOPFUSION_ES_JAVA_HOME:-}" ]]; then echo "$SHOPFUSION_ES_JAVA_HOME"; return; fi
    if [[ -n "${ES_JAVA_HOME:-}" ]]; then echo "$ES_JAVA_HOME"; return; fi
    for candidate in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
        [[ -x "$candidate/bin/java" ]] && { echo "$candidate"; return; }
    done
    local java
    java="$(command -v java)" || die "no Java found: install a JDK 17+ (apt-get install openjdk-17-jdk-headless) or set SHOPFUSION_ES_JAVA_HOME"
    dirname "$(dirname "$(readlink -f "$java")")"
}

fetch() {
    if [[ -f "$ZIP" ]] && unzip -tqq "$ZIP" >/dev/null 2>&1; then
        log "cached: $ZIP"
    else
        command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) to fetch $ARTIFACT"
        mkdir -p "$CACHE_DIR"
        local tmp
        tmp="$(mktemp -d "$CACHE_DIR/fetch.XXXXXX")"
        log "fetching $ARTIFACT from Maven Central"
        if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
            -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp" -Dmdep.overWriteReleases=true >&2; then
            rm -rf "$tmp"
            die "mvn could not fetch $ARTIFACT: check the version exists on Maven Central and the network"
        fi
        mv "$tmp/elasticsearch-${ES_VERSION}.zip" "$ZIP"
        rm -rf "$tmp"
    fi
    if [[ ! -x "$HOME_DIR/bin/elasticsearch" ]]; then
        log "unpacking into $HOME_DIR"
        local tmp
        tmp="$(mktemp -d "$CACHE_DIR/unpack.XXXXXX")"
        unzip -q "$ZIP" -d "$tmp"  # unzip keeps the exec bits (Python's zipfile does not)
        rm -rf "$HOME_DIR"
        mv "$tmp/elasticsearch-${ES_VERSION}" "$HOME_DIR"
        rm -rf "$tmp"
    fi
}

fetch_locked() {
    mkdir -p "$CACHE_DIR"
    ( exec 8>"$CACHE_DIR/.fetch.lock"; flock -w 600 8 || die "another fetch holds $CACHE_DIR/.fetch.lock"; fetch )
}

running_pid() {
    # The pid from the pid file when that process is alive and is an Elasticsearch JVM; else nothing.
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'org.elasticsearch' || return 1
    echo "$pid"
}

free_port() {
    local py
    py="$(command -v python3 || command -v python)" || { echo 9200; return; }
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

curl_es() {
    local auth=() security="$SECURITY"
    [[ -f "$RUN_DIR/es.security" ]] && security="$(cat "$RUN_DIR/es.security")"
    [[ "$security" == "true" ]] && auth=(-u "elastic:$PASSWORD")
    curl -fsS "${auth[@]}" --max-time 10 "$@"
}

print_env() {
    echo "SHOPFUSION_TEST_ES_URL=$(cat "$URL_FILE")"
    echo "export SHOPFUSION_TEST_ES_URL"
}

ensure_user() {
    id "$ES_USER" >/dev/null 2>&1 && return
    log "creating system user $ES_USER"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$ES_USER" \
        || id "$ES_USER" >/dev/null 2>&1 || die "could not create user $ES_USER (run once as root)"
}

start() {
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid)"
        print_env
        return
    fi
    fetch_locked
    rm -f "$PID_FILE"  # stale: the process is gone
    mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs"
    # Each run dir has its own config (and keystore), so a second node (security on) cannot leak into the
    # first one's settings.
    [[ -f "$RUN_DIR/config/jvm.options" ]] || cp -r "$HOME_DIR/config" "$RUN_DIR/config"
    local port="${SHOPFUSION_ES_PORT:-$(free_port)}"
    local jhome
    jhome="$(java_home)"
    local run_as=()
    if [[ "$(id -u)" == 0 ]]; then
        ensure_user
        chown -R "$ES_USER:" "$HOME_DIR" "$RUN_DIR"
        # The user must reach the server and run dirs through every parent directory (e.g. /root, or a
        # `mktemp -d` directory holding SHOPFUSION_ES_RUN_DIR).
        local top dir
        for top in "$CACHE_DIR" "$RUN_DIR"; do
            dir="$top"
            while [[ "$dir" != "/" ]]; do
                runuser -u "$ES_USER" -- test -x "$dir" || chmod o+x "$dir"
                dir="$(dirname "$dir")"
            done
        done
        run_as=(runuser -u "$ES_USER" --)
    fi
    local settings=(
        -Ediscovery.type=single-node
        -Enetwork.host=127.0.0.1
        -Ehttp.port="$port"
        -Epath.data="$RUN_DIR/data"
        -Epath.logs="$RUN_DIR/logs"
        -Ecluster.routing.allocation.disk.threshold_enabled=false
        -Expack.security.enabled="$SECURITY"
    )
    if [[ "$SECURITY" == "true" ]]; then
        # A disposable test node: fresh data, so the keystore's bootstrap password is the one that holds.
        rm -rf "$RUN_DIR/data" && mkdir -p "$RUN_DIR/data"
        if [[ ${#run_as[@]} -gt 0 ]]; then chown "$ES_USER:" "$RUN_DIR/data"; fi
        settings+=(-Expack.security.http.ssl.enabled=false -Expack.security.transport.ssl.enabled=false)
        # Bootstrap the `elastic` password through the keystore (read from stdin).
        "${run_as[@]}" env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$RUN_DIR/config" "$HOME_DIR/bin/elasticsearch-keystore" create -s >/dev/null 2>&1 || true
        printf '%s' "$PASSWORD" | "${run_as[@]}" env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$RUN_DIR/config" \
            "$HOME_DIR/bin/elasticsearch-keystore" add -x -f bootstrap.password >/dev/null
    fi
    log "starting Elasticsearch $ES_VERSION on 127.0.0.1:$port (java: $jhome, heap $HEAP)"
    local started=$SECONDS
    "${run_as[@]}" env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$RUN_DIR/config" ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
        "$HOME_DIR/bin/elasticsearch" -d -p "$PID_FILE" "${settings[@]}" \
        >"$RUN_DIR/console.log" 2>&1 \
        || { tail -n 30 "$RUN_DIR/console.log" >&2; die "the node did not start (see $RUN_DIR/console.log)"; }
    echo "$port" >"$PORT_FILE"
    echo "$SECURITY" >"$RUN_DIR/es.security"
    echo "http://127.0.0.1:$port" >"$URL_FILE"
    until curl_es "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1; do
        if ! running_pid >/dev/null; then
            tail -n 30 "$RUN_DIR/logs/"*.log "$RUN_DIR/console.log" 2>/dev/null >&2 || true
            die "the node exited during start-up (logs in $RUN_DIR/logs)"
        fi
        if (( SECONDS - started > TIMEOUT )); then
            stop
            die "no yellow health after ${TIMEOUT}s (logs in $RUN_DIR/logs); raise SHOPFUSION_ES_TIMEOUT"
        fi
        sleep 1
    done
    log "healthy after $((SECONDS - started))s (pid $(cat "$PID_FILE"))"
    print_env
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        rm -f "$PID_FILE"
        return
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 30s: sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

status() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        return 1
    fi
    local url
    url="$(cat "$URL_FILE")"
    log "running (pid $pid) at $url: $(curl_es "$url/_cluster/health" 2>/dev/null || echo 'health unavailable')"
    print_env
}

locked() {
    # Serialise fetch/start/stop of one run dir across concurrent callers (two test sessions, say).
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/.lock"
    flock -w 300 9 || die "another elasticsearch.sh holds $RUN_DIR/.lock"
    "$@"
}

case "${1:-}" in
    fetch) fetch_locked ;;
    start) locked start ;;
    stop) locked stop ;;
    status) status ;;
    *) echo "usage: $0 {fetch|start|stop|status}" >&2; exit 2 ;;
esac
