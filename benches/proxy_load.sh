#!/usr/bin/env bash
# Connector load benchmark: sysbench against the same MariaDB directly,
# through carbide, and through HAProxy (TCP mode), interleaved in one run so
# the three see the same machine load. Prints QPS, p95 latency and the
# ratios carbide/direct and carbide/HAProxy, then measures carbide's memory
# per idle session.
#
#   benches/proxy_load.sh                 # 10 s per run, threads 1 16 64
#   BENCH_TIME=30 THREADS="16 64" benches/proxy_load.sh
#   IDLE_SESSIONS=2000 benches/proxy_load.sh   (0 skips the idle test)
#   WORKERS=1 benches/proxy_load.sh   (connector.worker-threads; 0 = per core)
#   ROUNDS=3 benches/proxy_load.sh    (medians of 3 interleaved rounds)
#
# Everything runs on loopback in a temp dir and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages "${CARBIDE_PACKAGES[@]}" sysbench:sysbench haproxy:haproxy

TIME=${BENCH_TIME:-10}
THREADS=${THREADS:-"1 16 64"}
TESTS=${TESTS:-"oltp_point_select oltp_read_only"}
IDLE=${IDLE_SESSIONS:-2000}
W=$(mktemp -d /tmp/carbide-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
user_flag() { [ "$(id -u)" -eq 0 ] && echo "--user=root" || true; }

echo "== building carbide (release)"
cargo build --release --quiet --bin carbide

DB=$(free_port); RW=$(free_port); RO=$(free_port); ADMIN=$(free_port); HA=$(free_port)
mkdir -p "$W/tmp"
mariadb-install-db --no-defaults --datadir="$W/data" --tmpdir="$W/tmp" --auth-root-authentication-method=normal \
  --skip-test-db $(user_flag) >"$W/install.log" 2>&1
mariadbd --no-defaults --datadir="$W/data" --tmpdir="$W/tmp" --socket="$W/s.sock" --port="$DB" \
  --bind-address=127.0.0.1 $(user_flag) --log-error="$W/error.log" --pid-file="$W/m.pid" \
  --innodb-buffer-pool-size=512M --max-connections=$((IDLE + 200)) --thread-handling=pool-of-threads \
  --performance-schema=OFF --skip-name-resolve --innodb-flush-log-at-trx-commit=2 &
PIDS+=($!)
for _ in $(seq 1 100); do mariadb --no-defaults -h127.0.0.1 -P"$DB" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mariadb --no-defaults -h127.0.0.1 -P"$DB" -uroot -e "CREATE DATABASE sbtest"

cat >"$W/carbide.toml" <<TOML
[service]
name = "bench"
[credentials]
user = "root"
[connector]
rw-listen = "127.0.0.1:$RW"
ro-listen = "127.0.0.1:$RO"
max-connections = $((IDLE + 500))
worker-threads = ${WORKERS:-0}
[[member]]
name = "db1"
mysql = "127.0.0.1:$DB"
replicator = "127.0.0.1:$(free_port)"
thl = "127.0.0.1:$(free_port)"
manager = "127.0.0.1:$ADMIN"
role = "master"
TOML
CARBIDE_LOG=warn target/release/carbide serve --config "$W/carbide.toml" --member db1 2>"$W/carbide.log" &
CARBIDE_PID=$!
PIDS+=("$CARBIDE_PID")

cat >"$W/haproxy.cfg" <<CFG
global
  maxconn $((IDLE + 500))
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:$HA
  server db1 127.0.0.1:$DB
CFG
haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
sleep 1

SB=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-password= --mysql-db=sbtest
    --tables=4 --table-size=20000 --report-interval=0 --percentile=95 --histogram=off)
echo "== sysbench prepare (4 tables x 20000 rows)"
sysbench oltp_read_only "${SB[@]}" --mysql-port="$DB" prepare >/dev/null

TICK=$(getconf CLK_TCK)
# CPU time (user + system) a process has used, in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

run() { # test threads port [proxy-pid] -> "qps p95 cpu-us-per-query"
  local out before=0 after=0
  [ -n "${4:-}" ] && before=$(cpu_ticks "$4")
  out=$(sysbench "$1" "${SB[@]}" --mysql-port="$3" --threads="$2" --time="$TIME" run 2>&1) || { echo "$out" >&2; echo "0 0 0"; return; }
  [ -n "${4:-}" ] && after=$(cpu_ticks "$4")
  local qps p95 queries
  qps=$(echo "$out" | awk '/queries:/ {gsub(/[()]/,"",$3); print $3; exit}')
  p95=$(echo "$out" | awk '/95th percentile:/ {print $3; exit}')
  queries=$(echo "$out" | awk '/queries:/ {print $2; exit}')
  awk -v q="$qps" -v p="$p95" -v n="$queries" -v t=$((after - before)) -v hz="$TICK" \
    'BEGIN { printf "%s %s %.1f\n", q, p, (n > 0 ? t * 1e6 / hz / n : 0) }'
}

ROUNDS=${ROUNDS:-1}
: >"$W/results"
for t in $TESTS; do
  for n in $THREADS; do
    for r in $(seq 1 "$ROUNDS"); do
      # rotate the order each round so no target always runs first
      case $(( (r - 1) % 3 )) in
        0) order="d c h" ;; 1) order="c h d" ;; *) order="h d c" ;;
      esac
      for x in $order; do
        case $x in
          d) read -r dq dp _ < <(run "$t" "$n" "$DB") ;;
          c) read -r cq cp cc < <(run "$t" "$n" "$RW" "$CARBIDE_PID") ;;
          h) read -r hq hp hc < <(run "$t" "$n" "$HA" "$HAPROXY_PID") ;;
        esac
      done
      echo "$t $n $dq $dp $cq $cp $cc $hq $hp $hc" >>"$W/results"
      [ "$ROUNDS" -gt 1 ] && echo "   round $r: $t $n threads: direct $dq qps, carbide $cq qps, haproxy $hq qps" >&2
    done
  done
done

echo
echo "qps and p95 latency per target (median of $ROUNDS round(s), orders rotated); c/hap = carbide/HAProxy"
echo "(qps: higher is better; p95: lower is better); cpu = the proxy process's CPU time (user+sys)"
echo "per query in microseconds, from /proc (ticks of 1/$TICK s)"
printf '\n%-18s %7s | %10s %8s | %10s %8s | %10s %8s | %8s %8s | %8s %8s | %8s %8s %8s\n' test threads \
  "direct qps" "p95 ms" "carbide" "p95 ms" "haproxy" "p95 ms" "c/direct" "c/hap" "p95 c/d" "p95 c/h" \
  "cpu c" "cpu hap" "cpu c/h"
awk '
  function median(list,   a, i, j, t, m) { m = split(list, a, " ")
    for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
  { key = $1 " " $2; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
    for (i = 3; i <= 10; i++) v[key, i] = v[key, i] " " $i }
  END { for (k = 1; k <= nk; k++) { key = keys[k]; split(key, tn, " ")
      for (i = 3; i <= 10; i++) m[i] = median(v[key, i])
      dq = m[3]; dp = m[4]; cq = m[5]; cp = m[6]; cc = m[7]; hq = m[8]; hp = m[9]; hc = m[10]
      printf "%-18s %7d | %10.0f %8.2f | %10.0f %8.2f | %10.0f %8.2f | %8.2f %8.2f | %8.2f %8.2f | %8.1f %8.1f %8.2f\n",
        tn[1], tn[2], dq, dp, cq, cp, hq, hp, (dq>0?cq/dq:0), (hq>0?cq/hq:0), (dp>0?cp/dp:0), (hp>0?cp/hp:0),
        cc, hc, (hc>0?cc/hc:0) } }' "$W/results"

if [ "$IDLE" -gt 0 ]; then
  echo
  echo "== $IDLE idle sessions through carbide"
  cargo build --release --quiet --example idle_sessions
  target/release/examples/idle_sessions "127.0.0.1:$RW" "$IDLE" "$CARBIDE_PID"
fi
