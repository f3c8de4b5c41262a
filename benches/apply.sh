#!/usr/bin/env bash
# Applier benchmark: how fast a replica catches up on a backlog, native
# MariaDB replication vs carbide-replicator, and carbide's end-to-end
# latency at moderate load.
#
#   benches/apply.sh                          # BENCH_TIME=30 s of load per backlog
#   ROUNDS=3 benches/apply.sh                 # each backlog 3 times, median rates
#   BENCH_TIME=60 THREADS=16 benches/apply.sh
#   CHANNELS="1 4" RATE=300 LAT_TIME=20 SKIP_SINGLE=0 SKIP_MULTI=0 SKIP_LATENCY=0 benches/apply.sh
#   REPLICA_EXTRA="--binlog-cache-size=4M" benches/apply.sh   # more options, every replica
#   ROW_APPLY=sql benches/apply.sh            # carbide replicas apply rows as SQL (default: auto)
#   CHANNELS="4 4" ACTIVE="0 4" benches/apply.sh   # per replica --active-channels (default 0: one per core)
#   PERF=1 [PERF_DIR=/tmp/keep] benches/apply.sh   # perf record -g each catch-up, print the top symbols
#
# One primary (binlog ROW, FULL image, FULL metadata) and, of that primary,
# one native MariaDB replica (CHANGE MASTER TO file/pos, serial SQL thread:
# slave_parallel_threads=0, the default) and one carbide replica per entry
# of CHANNELS (carbide-replicator master on the primary, one
# carbide-replicator slave per replica with --channels N). All replicas run
# with the same server options (read_only, binlog with log_slave_updates,
# innodb_flush_log_at_trx_commit=2, sync_binlog=0 — as on the primary).
#
# A backlog is built with every replica's applier held back while its
# transport keeps running: the native replica's SQL thread is stopped (IO
# thread running, relay log filled), each carbide replica's database is
# held under FLUSH TABLES WITH READ LOCK (its replicator keeps pulling THL;
# the applier waits on its first statement). Then each replica catches up
# alone (native first, each once the machine's CPUs are idle again: InnoDB
# purge and flushing outlast a catch-up by seconds), timed from START SLAVE
# SQL_THREAD / UNLOCK TABLES until it has applied the last transaction:
#   1. sysbench oltp_write_only on one schema for BENCH_TIME s;
#   2. four sysbench oltp_write_only runs at once, one per schema (MULTI_DBS).
# Then, with every replica running, latency commit-on-primary →
# visible-on-replica under sysbench --rate=RATE plus a heartbeat row every
# 10 ms (in the loaded schema): p50/p99/max per replica.
#
# Everything runs on loopback in a temp dir and is stopped at the end.
# Needs: mariadb-server, mariadb-client, sysbench, python3. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages mariadbd:mariadb-server mariadb:mariadb-client sysbench:sysbench python3:python3

BENCH_TIME=${BENCH_TIME:-30}
THREADS=${THREADS:-8}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-20000}
CHANNELS=${CHANNELS:-"1 4"}
RATE=${RATE:-300}
LAT_TIME=${LAT_TIME:-20}
SKIP_MULTI=${SKIP_MULTI:-0}
SKIP_LATENCY=${SKIP_LATENCY:-0}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
# The multi-schema workload's schemas. Channels are chosen by a hash of the
# schema name, so 4 schemas land on 4 distinct channels only by luck (about
# 1 in 11); these four do (channels 1, 2, 3, 0 of 4; 1, 0, 1, 0 of 2 — see
# apply::plan::tests::channel_is_a_stable_hash). Each carbide replicator logs
# how many transactions each channel applied when it stops.
MULTI_DBS=${MULTI_DBS:-"sb1 sb2 sb3 sb7"}

echo "== building carbide-replicator (release)"
cargo build --release -q -p carbide-replicator --bins
REPL=$TARGET/release/carbide-replicator
TREPCTL=$TARGET/release/trepctl

W=$(mktemp -d /tmp/carbide-bench-apply.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  for f in "$W"/r*.log; do
    [ -f "$f" ] || continue
    sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -o 'channel=[0-9]* transactions=[0-9]* blocks=[0-9]*' | tr '\n' ' ' |
      sed "s|^|== carbide replica $(basename "$f" .log) at exit: |; s| \$|\n|"
  done
  rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
USERARG=(); [ "$(id -u)" = 0 ] && USERARG=(--user=root)
SERVER_OPTS=(--skip-name-resolve --performance-schema=OFF --innodb-buffer-pool-size=512M
  --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=2 --sync-binlog=0
  --log-bin=mariadb-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL
  --max-binlog-size=256M --max-connections=300)
# shellcheck disable=SC2206 # REPLICA_EXTRA is a list of server options
REPLICA_OPTS=(--read-only=ON --log-slave-updates=ON ${REPLICA_EXTRA:-})

start_db() { # name server_id extra-opts... ; sets PORT
  local name=$1 id=$2; shift 2
  local port; port=$(free_port)
  mkdir -p "$W/$name/tmp"
  mariadb-install-db --no-defaults --datadir="$W/$name/data" --tmpdir="$W/$name/tmp" "${USERARG[@]}" \
    --auth-root-authentication-method=normal --skip-test-db >"$W/$name/install.log" 2>&1
  mariadbd --no-defaults --datadir="$W/$name/data" --tmpdir="$W/$name/tmp" --socket="$W/$name/sock" \
    --pid-file="$W/$name/pid" --log-error="$W/$name/error.log" --port="$port" --bind-address=127.0.0.1 \
    "${USERARG[@]}" --server-id="$id" "${SERVER_OPTS[@]}" "$@" >/dev/null 2>&1 &
  PIDS+=($!); DBPID=$!
  for _ in $(seq 200); do mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  PORT=$port
}
wait_online() { # admin port
  for _ in $(seq 150); do "$TREPCTL" -port "$1" wait -state ONLINE -limit 30 >/dev/null 2>&1 && return; sleep 0.2; done
  echo "replicator on admin port $1 did not go ONLINE" >&2; return 1
}
sql() { local port=$1; shift; mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot -N -B "$@"; }

echo "== starting the primary, the native replica and carbide replica(s) with channels: $CHANNELS"
start_db primary 1; P=$PORT
start_db native 2 "${REPLICA_OPTS[@]}"; N=$PORT; NPID=$DBPID
CPORTS=(); CPIDS=(); i=0
for c in $CHANNELS; do
  start_db "carbide$i" $((10 + i)) "${REPLICA_OPTS[@]}"; CPORTS+=("$PORT"); CPIDS+=("$DBPID"); i=$((i + 1))
done

read -r FILE POS < <(sql "$P" -e 'SHOW MASTER STATUS' | awk '{print $1, $2}')
sql "$N" -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$P, MASTER_USER='root', \
  MASTER_PASSWORD='', MASTER_LOG_FILE='$FILE', MASTER_LOG_POS=$POS; START SLAVE"

MADMIN=$(free_port)
{
  printf '[service]\nname = "bench"\n[credentials]\nuser = "root"\n[replicator]\nthl-root = "%s"\n' "$W/thl"
  printf '[[member]]\nname = "db1"\nmysql = "127.0.0.1:%s"\nreplicator = "127.0.0.1:%s"\nthl = "127.0.0.1:%s"\nmanager = "127.0.0.1:%s"\nrole = "master"\n' \
    "$P" "$MADMIN" "$(free_port)" "$(free_port)"
} >"$W/carbide.toml"
CADMIN=()
for i in "${!CPORTS[@]}"; do
  a=$(free_port); CADMIN+=("$a")
  printf '[[member]]\nname = "r%s"\nmysql = "127.0.0.1:%s"\nreplicator = "127.0.0.1:%s"\nthl = "127.0.0.1:%s"\nmanager = "127.0.0.1:%s"\nrole = "slave"\n' \
    "$i" "${CPORTS[$i]}" "$a" "$(free_port)" "$(free_port)" >>"$W/carbide.toml"
done
"$REPL" --config "$W/carbide.toml" --member db1 --start current 2>"$W/master.log" &
PIDS+=($!)
wait_online "$MADMIN"
i=0; RPIDS=()
read -r -a ACTIVES <<<"${ACTIVE:-}"
for c in $CHANNELS; do
  "$REPL" --config "$W/carbide.toml" --member "r$i" --channels "$c" --row-apply "${ROW_APPLY:-auto}" \
    --active-channels "${ACTIVES[$i]:-0}" 2>"$W/r$i.log" &
  PIDS+=($!); RPIDS+=($!)
  i=$((i + 1))
done
for a in "${CADMIN[@]}"; do wait_online "$a"; done

echo "== sysbench prepare: sbtest ($TABLES x $TABLE_SIZE rows) and $MULTI_DBS (2 x $TABLE_SIZE rows each)"
sql "$P" -e "CREATE DATABASE sbtest; $(for d in $MULTI_DBS; do printf 'CREATE DATABASE %s; ' "$d"; done)
  CREATE TABLE sbtest.hb (id BIGINT PRIMARY KEY, t DOUBLE NOT NULL)"
SB=(sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$P" --mysql-user=root --mysql-password=)
"${SB[@]}" --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE" --threads=4 prepare >/dev/null
PREP=()
for d in $MULTI_DBS; do "${SB[@]}" --mysql-db=$d --tables=2 --table-size="$TABLE_SIZE" prepare >/dev/null & PREP+=($!); done
for j in "${PREP[@]}"; do wait "$j"; done

python3 - "$P" "$N" "$MADMIN" "$BENCH_TIME" "$THREADS" "$TABLES" "$TABLE_SIZE" "$RATE" "$LAT_TIME" \
  "$SKIP_MULTI" "$SKIP_LATENCY" "$CHANNELS" "${CPORTS[*]}" "${CADMIN[*]}" "$MULTI_DBS" \
  "$NPID" "${CPIDS[*]}" "${RPIDS[*]}" "${PERF:-0}" "$W" "${SKIP_SINGLE:-0}" "${ROUNDS:-1}" <<'PY'
import json, os, statistics, subprocess, sys, threading, time, urllib.request

(P, N, MADMIN, BENCH_TIME, THREADS, TABLES, TABLE_SIZE, RATE, LAT_TIME,
 SKIP_MULTI, SKIP_LATENCY) = sys.argv[1:12]
CHANNELS = sys.argv[12].split()
CPORTS = sys.argv[13].split()
CADMIN = sys.argv[14].split()
MULTI_DBS = sys.argv[15].split()
NPID, CPIDS, RPIDS = sys.argv[16], sys.argv[17].split(), sys.argv[18].split()
PERF, W, SKIP_SINGLE, ROUNDS = sys.argv[19] == "1", sys.argv[20], sys.argv[21], int(sys.argv[22])
BENCH_TIME, THREADS, RATE, LAT_TIME = int(BENCH_TIME), int(THREADS), int(RATE), int(LAT_TIME)
TICK = os.sysconf("SC_CLK_TCK")
# the name of carbide replica i (with its --active-channels when ACTIVE is set, and
# r<i> when two replicas have the same channel count)
ACTIVE = os.environ.get("ACTIVE", "").split()
LABELS = [f"carbide {c}ch" + (f" a{ACTIVE[i]}" if i < len(ACTIVE) else "")
          + (f" r{i}" if CHANNELS.count(c) > 1 else "") for i, c in enumerate(CHANNELS)]

def cpu(pid):
    """CPU seconds used so far by a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / TICK

def threads(pid):
    """CPU seconds used so far by each thread of a process."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            out[t] = (int(v[11]) + int(v[12])) / TICK
        except OSError:
            pass
    return out

def quiet(limit=20.0, busy=0.15):
    """Waits (up to `limit` s) until this machine's CPUs are mostly idle
    (under `busy` for half a second): InnoDB purge and page flushing go on
    for seconds after a large catch-up or load, and would otherwise run
    into the next replica's timed catch-up."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    end, a = time.time() + limit, snap()
    while time.time() < end:
        time.sleep(0.5)
        b = snap()
        total, idle = b[0] - a[0], b[1] - a[1]
        if total > 0 and 1 - idle / total < busy:
            return
        a = b

def busiest(before, after):
    """CPU seconds of the thread that used the most between two snapshots."""
    return max((after[t] - before.get(t, 0.0) for t in after), default=0.0)

def perf_start(pids, name):
    if not PERF: return None
    out = f"{os.environ.get('PERF_DIR', W)}/perf-{name}.data"
    return subprocess.Popen(["perf", "record", "-q", "-F", "499", "-g", "-o", out, "-p", ",".join(pids)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out

def perf_stop(h):
    if not h: return
    p, out = h
    p.send_signal(2); p.wait()
    rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", "comm,dso,sym",
                          "--stdio", "-g", "none", "--percent-limit", "0.4"],
                         capture_output=True, text=True).stdout
    lines = [l.strip() for l in rep.splitlines() if l.strip() and not l.startswith("#")]
    print("    perf, share of all samples (self time):")
    db = [l for l in lines if " mariadbd " in l][:12]
    other = [l for l in lines if " mariadbd " not in l][:18]
    for l in db + other: print("     ", l[:150])

def sql(port, q):
    out = subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-N", "-B", "-e", q],
                         check=True, capture_output=True, text=True).stdout
    return [l.split("\t") for l in out.splitlines()]

class Session:
    """A long-lived mariadb client: one statement in, its result lines out."""
    def __init__(self, port):
        self.p = subprocess.Popen(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot",
                                   "-N", "-B", "-n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
    def run(self, q, lines=1):
        self.p.stdin.write(q + ";\n"); self.p.stdin.flush()
        return [self.p.stdout.readline().rstrip("\n") for _ in range(lines)]
    def close(self):
        self.p.stdin.close(); self.p.wait()

def status(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/services/bench/status", timeout=10) as r:
        return json.load(r)

def wait_until(what, f, limit=900, every=0.05):
    t0 = time.time()
    while not f():
        if time.time() - t0 > limit:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(every)

def primary_end():
    f, p = sql(P, "SHOW MASTER STATUS")[0][:2]
    return f, int(p)

def extracted_seqno():
    """Waits until carbide's master has extracted the primary's binlog end; its last seqno."""
    f, p = primary_end()
    def done():
        e = status(MADMIN)["appliedLastEventId"]
        if ":" not in e: return False
        ef, rest = e.split(":", 1)
        return (ef, int(rest.split(";")[0])) >= (f, p)
    wait_until("extraction", done)
    return status(MADMIN)["appliedLastSeqno"]

def native_io_done(f, p):
    def done():
        r = sql(N, "SHOW SLAVE STATUS")[0]
        # Master_Log_File, Read_Master_Log_Pos are the 6th and 7th columns
        return (r[5], int(r[6])) >= (f, p)
    wait_until("native IO thread", done)

def all_caught_up():
    f, p = primary_end()
    target = extracted_seqno()
    r = sql(N, f"SELECT MASTER_POS_WAIT('{f}', {p}, 900)")
    for a in CADMIN:
        wait_until("carbide applied", lambda: status(a)["appliedLastSeqno"] >= target)
    return target

def sysbench(db, threads, secs, tables, extra=()):
    cmd = ["sysbench", "oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={P}",
           "--mysql-user=root", "--mysql-password=", f"--mysql-db={db}", f"--tables={tables}",
           f"--table-size={TABLE_SIZE}", f"--threads={threads}", f"--time={secs}", "--report-interval=0", *extra, "run"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def tps(out):
    for l in out.splitlines():
        if l.strip().startswith("transactions:"):
            return float(l.split("(")[1].split()[0])
    return 0.0

def backlog(title, runs):
    print(f"\n== {title}")
    all_caught_up()
    sql(N, "STOP SLAVE SQL_THREAD")
    locks = []
    for port in CPORTS:
        s = Session(port)
        s.run("FLUSH TABLES WITH READ LOCK; SELECT 'locked'")
        locks.append(s)
    s0 = extracted_seqno()
    procs = [sysbench(*r) for r in runs]
    outs = [p.communicate()[0] for p in procs]
    for p, o in zip(procs, outs):
        if p.returncode != 0: sys.exit(o)
    rate = sum(tps(o) for o in outs)
    f, p = primary_end()
    target = extracted_seqno()
    n = target - s0
    for a in CADMIN:
        wait_until("carbide THL transfer", lambda: status(a)["maximumStoredSeqNo"] >= target)
    native_io_done(f, p)
    print(f"  primary: {rate:.0f} tx/s for {BENCH_TIME} s; backlog {n} transactions "
          f"(THL seqno {s0 + 1}..{target}); every replica holds it locally")
    res, cpus = {}, {}
    quiet()
    c0, th0 = cpu(NPID), threads(NPID)
    h = perf_start([NPID], "native")
    t0 = time.time()
    sql(N, f"START SLAVE SQL_THREAD; SELECT MASTER_POS_WAIT('{f}', {p}, 900)")
    res["native"] = time.time() - t0
    cpus["native"] = (cpu(NPID) - c0, 0.0, busiest(th0, threads(NPID)), 0.0)
    perf_stop(h)
    for c, label, a, lock, dbpid, rpid in zip(CHANNELS, LABELS, CADMIN, locks, CPIDS, RPIDS):
        quiet()
        c0, r0, th0, rt0 = cpu(dbpid), cpu(rpid), threads(dbpid), threads(rpid)
        h = perf_start([dbpid, rpid], f"carbide{c}")
        t0 = time.time()
        lock.run("UNLOCK TABLES; SELECT 'unlocked'")
        wait_until("carbide catch-up", lambda: status(a)["appliedLastSeqno"] >= target, every=0.01)
        res[label] = time.time() - t0
        cpus[label] = (cpu(dbpid) - c0, cpu(rpid) - r0, busiest(th0, threads(dbpid)),
                                  busiest(rt0, threads(rpid)))
        perf_stop(h)
        lock.close()
        st = status(a)
        if st["state"] != "ONLINE": sys.exit(f"{label}: {st['state']} {st['pendingError']}")
    base = n / res["native"]
    print(f"  {'replica':<14} {'seconds':>8} {'tx/s':>8} {'vs native':>9}   cpu s: {'mariadbd':>8} "
          f"{'(busiest thread)':>16} {'replicator':>10} {'(busiest)':>9}")
    for k, secs in res.items():
        r = n / secs
        print(f"  {k:<14} {secs:8.2f} {r:8.0f} {r / base:8.2f}x {cpus[k][0]:16.1f} {cpus[k][2]:16.1f} "
              f"{cpus[k][1]:10.1f} {cpus[k][3]:9.1f}")
    return {k: n / secs for k, secs in res.items()}

def rounds(title, runs):
    """Runs a backlog phase ROUNDS times; prints the median rates."""
    all = [backlog(f"{title} (round {i + 1}/{ROUNDS})" if ROUNDS > 1 else title, runs) for i in range(ROUNDS)]
    if ROUNDS > 1:
        med = {k: statistics.median(r[k] for r in all) for k in all[0]}
        print(f"  median of {ROUNDS} rounds: " + ", ".join(
            f"{k} {v:.0f} tx/s ({v / med['native']:.2f}x)" for k, v in med.items()))
        # each round's ratio is measured side by side, so its median is the
        # steadier figure when the machine's speed drifts between rounds
        print("  ratio to native, per round: " + "; ".join(
            f"{k} " + " / ".join(f"{r[k] / r['native']:.2f}" for r in all)
            + f" (median {statistics.median(r[k] / r['native'] for r in all):.2f}x)"
            for k in all[0] if k != "native"))

if SKIP_SINGLE != "1":
    rounds(f"1. backlog: sysbench oltp_write_only, sbtest ({TABLES} tables), {THREADS} threads, {BENCH_TIME} s",
            [("sbtest", THREADS, BENCH_TIME, TABLES)])
if SKIP_MULTI != "1":
    per = max(1, THREADS // 4)
    rounds(f"2. backlog: {len(MULTI_DBS)} x sysbench oltp_write_only at once ({', '.join(MULTI_DBS)}; "
            f"{per} threads each), {BENCH_TIME} s", [(d, per, BENCH_TIME, 2) for d in MULTI_DBS])


if SKIP_LATENCY != "1":
    print(f"\n== 3. latency commit-on-primary -> visible-on-replica: sysbench --rate={RATE} "
          f"(4 threads) + a heartbeat row every 10 ms, {LAT_TIME} s")
    all_caught_up()
    sql(P, "DELETE FROM sbtest.hb")
    committed = {}
    stop = threading.Event()
    def writer():
        s = Session(P)
        i = 0
        while not stop.is_set():
            i += 1
            s.run(f"INSERT INTO sbtest.hb VALUES ({i}, UNIX_TIMESTAMP(NOW(6))); SELECT {i}")
            committed[i] = time.time()
            time.sleep(0.01)
        s.close()
    def poller(port, lat):
        s = Session(port)
        seen = 0
        while not stop.is_set() or seen < max(committed, default=0):
            v = s.run("SELECT COALESCE(MAX(id), 0) FROM sbtest.hb")[0]
            now = time.time()
            m = int(v)
            for k in range(seen + 1, m + 1):
                if k in committed:
                    lat.append(now - committed[k])
            seen = max(seen, m)
            time.sleep(0.002)
        s.close()
    names = ["native"] + LABELS
    lats = {k: [] for k in names}
    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=poller, args=(port, lats[k])) for k, port in zip(names, [N] + CPORTS)]
    for t in threads: t.start()
    sb = sysbench("sbtest", 4, LAT_TIME, TABLES, (f"--rate={RATE}",))
    out = sb.communicate()[0]
    stop.set()
    for t in threads: t.join()
    print(f"  primary: {tps(out):.0f} tx/s sysbench + {len(committed)} heartbeats")
    print(f"  {'replica':<14} {'samples':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for k in names:
        l = sorted(lats[k])
        if not l: print(f"  {k:<14} no samples"); continue
        q = lambda f: l[min(len(l) - 1, int(f * len(l)))] * 1000
        print(f"  {k:<14} {len(l):7d} {q(0.5):8.1f} {q(0.99):8.1f} {l[-1] * 1000:8.1f}")
PY
