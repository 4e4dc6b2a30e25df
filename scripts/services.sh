#!/usr/bin/env bash
# Start or stop the real services the integration tests use: Elasticsearch (scripts/elasticsearch.sh)
# and Redis (scripts/redis.sh). Both install what they need (the ES zip from Maven Central, Debian's
# redis-server) on first use.
#
#   eval "$(scripts/services.sh start)"   # exports SHOPFUSION_TEST_ES_URL and SHOPFUSION_TEST_REDIS_URL
#   scripts/services.sh stop
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${1:-}" in
    start)
        for service in elasticsearch redis; do
            bash "$HERE/$service.sh" start | sed -n 's/^\(SHOPFUSION_[A-Z_]*\)=\(.*\)$/export \1="\2"/p'
        done
        ;;
    stop)
        bash "$HERE/redis.sh" stop || true
        bash "$HERE/elasticsearch.sh" stop || true
        ;;
    status)
        bash "$HERE/elasticsearch.sh" status && bash "$HERE/redis.sh" status
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
