#!/usr/bin/env bash
# THL storage benchmark: append (1 KB and 64 KB transactions, fsync per
# group), sequential scan, and open time of a large log. Prints MB/s and tx/s.
#
#   benches/thl.sh                          # 2 GB log for the open test
#   THL_BENCH_OPEN_GB=10 benches/thl.sh     # the 10 GB figure
#   THL_BENCH_DROP_CACHES=1 benches/thl.sh  # cold-cache scan/open (root)
#   THL_BENCH_DIR=/data/bench benches/thl.sh
#
# Needs ~2 GB + THL_BENCH_OPEN_GB of free disk in THL_BENCH_DIR
# (default /work/tmp-thl-bench); files are deleted afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p carbide-replicator --bench thl "$@"
