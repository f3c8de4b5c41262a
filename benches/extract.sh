#!/usr/bin/env bash
# Extractor benchmark (issue 5). Starts a throwaway MariaDB on a free port,
# then measures:
#   A. lag under sysbench oltp_write_only (THREADS threads, SECONDS s): every
#      0.5 s the server's binlog end is sampled; the lag of a sample is the time
#      until the replicator's appliedLastEventId reaches it. Prints p50/p99/max.
#   B. extraction throughput: BINLOG_MB of binlog written with the replicator
#      offline, then a fresh replicator (empty THL, --start earliest) extracts
#      it all; prints MB/s and transactions/s.
# Usage: benches/extract.sh   (env: THREADS=16 SECONDS=60 BINLOG_MB=1024 FSYNC=commit|MS SKIP_A=1)
# Needs: mariadb-server, mariadb-client, sysbench, python3. Release build.
set -euo pipefail
THREADS=${THREADS:-16}
SECONDS_A=${SECONDS:-60}
BINLOG_MB=${BINLOG_MB:-1024}
FSYNC=${FSYNC:-commit}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p carbide-replicator --bins --manifest-path "$ROOT/Cargo.toml"
REPL=$TARGET/release/carbide-replicator
TREPCTL=$TARGET/release/trepctl
W=$(mktemp -d /tmp/carbide-bench-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DBPORT=$(freeport); APORT=$(freeport)
USERARG=(); [ "$(id -u)" = 0 ] && USERARG=(--user=root)
mariadb-install-db --no-defaults --datadir="$W/data" "${USERARG[@]}" --auth-root-authentication-method=normal --skip-test-db >/dev/null
mariadbd --no-defaults --datadir="$W/data" --socket="$W/sock" --port="$DBPORT" --bind-address=127.0.0.1 \
  "${USERARG[@]}" --server-id=1 --log-bin=mariadb-bin --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --innodb-buffer-pool-size=512M --innodb-log-file-size=512M \
  --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-binlog-size=256M --max-connections=200 \
  --log-error="$W/error.log" --pid-file="$W/pid" &
PIDS+=($!)
SQL=(mariadb -h127.0.0.1 -P"$DBPORT" -uroot)
for _ in $(seq 100); do "${SQL[@]}" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
cat > "$W/carbide.toml" <<TOML
[service]
name = "bench"
[credentials]
user = "root"
[replicator]
thl-root = "$W/thl"
[[member]]
name = "db1"
mysql = "127.0.0.1:$DBPORT"
replicator = "127.0.0.1:$APORT"
thl = "127.0.0.1:$(freeport)"
manager = "127.0.0.1:$(freeport)"
role = "master"
TOML
start_repl() {
  "$REPL" --config "$W/carbide.toml" --member db1 --start "$1" --fsync "$FSYNC" 2>>"$W/repl.log" &
  RPID=$!; PIDS+=($RPID)
  "$TREPCTL" -port "$APORT" wait -state ONLINE -limit 30 2>/dev/null || { sleep 1; "$TREPCTL" -port "$APORT" wait -state ONLINE -limit 30; }
}
"${SQL[@]}" -e 'CREATE DATABASE sbtest'
SB=(sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$DBPORT" --mysql-user=root --tables=8 --table-size=20000)
"${SB[@]}" prepare >/dev/null

if [ "${SKIP_A:-0}" != 1 ]; then
echo "== A. lag under sysbench oltp_write_only, $THREADS threads, ${SECONDS_A}s (fsync=$FSYNC)"
start_repl current
"${SB[@]}" --threads="$THREADS" --time="$SECONDS_A" --report-interval=10 run > "$W/sysbench.txt" &
SBPID=$!
python3 - "$DBPORT" "$APORT" "$TREPCTL" "$SBPID" <<'PY'
import json, subprocess, sys, time, os
db, port, trep, sbpid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def master():
    out = subprocess.check_output(["mariadb","-h127.0.0.1","-P"+db,"-uroot","-N","-e","SHOW MASTER STATUS"]).decode().split()
    return (out[0], int(out[1]))
def applied():
    st = json.loads(subprocess.check_output([trep,"-port",port,"status","-json"]))
    f, rest = st["appliedLastEventId"].split(":", 1) if ":" in st["appliedLastEventId"] else ("", "0")
    return (f, int(rest.split(";")[0]))
pending, lags, last = [], [], 0
def alive():
    try: os.kill(sbpid, 0); return True
    except OSError: return False
while alive() or pending:
    now = time.time()
    if alive() and now - last >= 0.5:
        pending.append((now, master())); last = now
    a = applied()
    while pending and a >= pending[0][1]:
        lags.append(time.time() - pending.pop(0)[0])
    time.sleep(0.05)
    if pending and time.time() - pending[0][0] > 120: print("lag > 120 s, giving up"); break
lags.sort()
if lags:
    q = lambda p: lags[min(len(lags)-1, int(p*len(lags)))]
    print(f"lag samples {len(lags)}: p50 {q(0.5):.3f}s  p99 {q(0.99):.3f}s  max {lags[-1]:.3f}s")
PY
wait "$SBPID" || true
grep -E "transactions:|queries:" "$W/sysbench.txt" | sed 's/^ */  sysbench /'
kill "$RPID"; wait "$RPID" 2>/dev/null || true
fi

echo "== B. extract a pre-written binlog of ~${BINLOG_MB} MB"
"${SQL[@]}" -e "FLUSH BINARY LOGS; CREATE TABLE sbtest.big (id BIGINT PRIMARY KEY, k INT, pad VARCHAR(255)) "
START_FILE=$("${SQL[@]}" -N -e 'SHOW MASTER STATUS' | awk '{print $1}')
n=0
while :; do
  size=$("${SQL[@]}" -N -e "SHOW BINARY LOGS" | awk -v s="$START_FILE" '$1>=s {t+=$2} END {print int(t/1048576)}')
  [ "$size" -ge "$BINLOG_MB" ] && break
  "${SQL[@]}" -e "INSERT INTO sbtest.big SELECT $n*1000000+seq, seq, REPEAT(CHAR(65+seq%26), 200) FROM sbtest.seq_1_to_100000"
  n=$((n+1))
done
BYTES=$("${SQL[@]}" -N -e "SHOW BINARY LOGS" | awk -v s="$START_FILE" '$1>=s {t+=$2} END {print t}')
read -r END_FILE END_POS < <("${SQL[@]}" -N -e 'SHOW MASTER STATUS' | awk '{print $1, $2}')
rm -rf "$W/thl"
T0=$(date +%s.%N)
start_repl "$START_FILE:4"
python3 - "$APORT" "$TREPCTL" "$END_FILE" "$END_POS" <<'PY'
import json, subprocess, sys, time
port, trep, ef, ep = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
while True:
    st = json.loads(subprocess.check_output([trep,"-port",port,"status","-json"]))
    e = st["appliedLastEventId"]
    if ":" in e:
        f, rest = e.split(":", 1)
        if (f, int(rest.split(";")[0])) >= (ef, ep): break
    time.sleep(0.05)
PY
T1=$(date +%s.%N)
SEQ=$("$TREPCTL" -port "$APORT" status -json | python3 -c 'import json,sys; print(json.load(sys.stdin)["appliedLastSeqno"])')
python3 -c "b=$BYTES; t=$T1-$T0; print(f'  {b/1048576:.0f} MB of binlog, {int($SEQ)+1} transactions in {t:.2f}s: {b/1048576/t:.1f} MB/s, {(int($SEQ)+1)/t:.0f} tx/s (includes daemon start)')"
du -sh "$W/thl" | sed 's/^/  THL size /'
