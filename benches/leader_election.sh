#!/usr/bin/env bash
# How fast the managers elect a new coordinator after kill -9 of the old
# one's carbide process: three real members (MariaDB, replicator, carbide),
# default [manager] timers (heartbeat 150 ms, election timeout 750 ms),
# ROUNDS kills (default 10); prints each round and median / p90 / max.
#
#   benches/leader_election.sh            # ROUNDS=20 benches/leader_election.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages "${CARBIDE_PACKAGES[@]}"
ROUNDS=${ROUNDS:-10} cargo test --release --test t20_manager bench_leader_election -- --ignored --nocapture 2>&1 \
  | grep -E "^round|^leader election|panicked|test result"
