#!/usr/bin/env bash
# The first and second `docker compose up` of the demo, without a container engine: the init and
# API services' commands with their compose environment, /data on a fresh directory, timed.
#   bash bench/compose_demo_times.sh [WORKDIR]     (default /tmp/asen-compose-times; deleted first)
# Needs the project installed (make install). The image build itself is not part of the numbers.
set -euo pipefail
work=${1:-/tmp/asen-compose-times}
asen=${ASEN:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/asen}
port=${PORT:-8765}
rm -rf "$work"; mkdir -p "$work/data"; cd "$work"
# docker-compose.yml's environment, /data -> $work/data (the API binds loopback here)
export ASEN_CHECKPOINT=$work/data/model/best.pt ASEN_INDEX=$work/data/index ASEN_HOST=127.0.0.1 ASEN_PORT=$port
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824 OMP_WAIT_POLICY=PASSIVE
now() { date +%s.%N; }
ready() { until curl -sf "localhost:$port/readyz" >/dev/null; do sleep 0.2; done; }
s=$(now); "$asen" demo --workdir "$work/data" --no-serve > init1.log 2>&1; e=$(now)
echo "init, first run: $(echo "$e - $s" | bc) s"
s=$(now); "$asen" serve > serve1.log 2>&1 & pid=$!; ready; e=$(now)
echo "API /readyz after the first init: $(echo "$e - $s" | bc) s"
curl -s -X POST "localhost:$port/search" -F attribute=colour -F item_id=test-00000 -F top_k=3 | head -c 200; echo
kill -TERM $pid; wait $pid || true
s=$(now); "$asen" demo --workdir "$work/data" --no-serve > init2.log 2>&1; e=$(now)
echo "init, second run: $(echo "$e - $s" | bc) s"
s=$(now); "$asen" serve > serve2.log 2>&1 & pid=$!; ready; e=$(now)
echo "API /readyz after the second init: $(echo "$e - $s" | bc) s"
kill -TERM $pid; wait $pid || true
