#!/usr/bin/env bash
# A local 3-node carbide dataservice on loopback, in ./sandbox/.
#
#   scripts/sandbox.sh [up]    install what is missing, build, start it
#   scripts/sandbox.sh status  show what runs
#   scripts/sandbox.sh start-db NAME   start member NAME's MariaDB again (after a kill)
#   scripts/sandbox.sh down    stop everything it started and remove ./sandbox/
#
# Everything lives under ./sandbox/: the config (carbide.toml), the
# dataservice secret (secret, mode 600), one directory per MariaDB instance
# (data, socket, pid, error log) and the THL.
# Processes are stopped by the pids recorded there, never by name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SB="$ROOT/sandbox"
NODES=(db1 db2 db3)
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh

log() { printf 'sandbox: %s\n' "$*" >&2; }
die() { printf 'sandbox: error: %s\n' "$*" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# next_free_port START: sets PORT to the first port >= START nothing listens
# on and that this run has not handed out yet. (It sets a variable rather
# than printing: in a $(...) subshell the TAKEN list would not grow.)
TAKEN=" "
PORT=
next_free_port() {
  local p=$1
  while port_in_use "$p" || [[ $TAKEN == *" $p "* ]]; do p=$((p + 1)); done
  TAKEN+="$p "
  PORT=$p
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

user_flag() { [ "$(id -u)" -eq 0 ] && echo "--user=root" || true; }

# --- MariaDB -----------------------------------------------------------------

start_db() { # name port server_id read_only
  local name=$1 port=$2 id=$3 ro=$4 d="$SB/$1"
  mkdir -p "$d/tmp"
  if [ ! -d "$d/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$d/data" --tmpdir="$d/tmp" \
      --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
      $(user_flag) >"$d/install.log" 2>&1 || { cat "$d/install.log" >&2; die "mariadb-install-db failed for $name"; }
  fi
  nohup mariadbd --no-defaults --datadir="$d/data" --tmpdir="$d/tmp" \
    --socket="$d/mysqld.sock" --pid-file="$d/mysqld.pid" --log-error="$d/error.log" \
    --port="$port" --bind-address=127.0.0.1 --server-id="$id" $(user_flag) \
    --log-bin=mariadb-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
    --read-only="$ro" --skip-name-resolve --performance-schema=OFF \
    --innodb-buffer-pool-size=128M --local-infile=1 \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$d/mariadbd.pid"
  local i
  for i in $(seq 1 200); do
    if mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1; then return 0; fi
    pid_alive "$(cat "$d/mariadbd.pid")" || break
    sleep 0.1
  done
  tail -20 "$d/error.log" >&2 || true
  die "MariaDB $name did not start on port $port"
}

sql() { # port statements
  mariadb --no-defaults -h127.0.0.1 -P"$1" -uroot -e "$2"
}

# --- carbide (manager + connector), one per member ----------------------------

start_carbides() {
  local i n j ok
  for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    log "starting carbide for $n: manager 127.0.0.1:${MGR_PORT[$i]}, connector 127.0.0.1:${RW_PORT[$i]} (rw) and :${RO_PORT[$i]} (ro)"
    nohup target/release/carbide serve --config "$SB/carbide.toml" --member "$n" \
      </dev/null >/dev/null 2>"$SB/carbide-$n.log" &
    echo $! >"$SB/carbide-$n.pid"
  done
  for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    ok=0
    for j in $(seq 1 100); do
      if port_in_use "${RW_PORT[$i]}" && port_in_use "${MGR_PORT[$i]}"; then ok=1; break; fi
      pid_alive "$(cat "$SB/carbide-$n.pid")" || break
      sleep 0.1
    done
    [ $ok -eq 1 ] || { cat "$SB/carbide-$n.log" >&2; die "carbide for $n did not start"; }
  done
  log "waiting for the managers to elect a coordinator"
  for j in $(seq 1 150); do
    if target/release/cctrl -c "$SB/carbide.toml" -e ls >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  target/release/cctrl -c "$SB/carbide.toml" -e ls || true
  tail -20 "$SB"/carbide-*.log >&2
  die "the managers did not elect a coordinator within 30 s"
}

# --- replicators --------------------------------------------------------------

start_replicators() {
  local i n
  for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    log "starting carbide-replicator for $n (admin 127.0.0.1:${REPL_PORT[$i]}, THL 127.0.0.1:${THL_PORT[$i]})"
    nohup target/release/carbide-replicator --config "$SB/carbide.toml" --member "$n" --start earliest \
      </dev/null >/dev/null 2>"$SB/replicator-$n.log" &
    echo $! >"$SB/replicator-$n.pid"
  done
  for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    local ok=0 j
    for j in $(seq 1 100); do
      if port_in_use "${REPL_PORT[$i]}"; then ok=1; break; fi
      pid_alive "$(cat "$SB/replicator-$n.pid")" || break
      sleep 0.1
    done
    [ $ok -eq 1 ] || { cat "$SB/replicator-$n.log" >&2; die "carbide-replicator for $n did not start"; }
  done
}

# --- config ------------------------------------------------------------------

write_config() {
  local f="$SB/carbide.toml" i n
  {
    echo "# carbide sandbox dataservice, written by scripts/sandbox.sh"
    echo "[service]"
    echo "name = \"sandbox\""
    echo "policy = \"automatic\""
    echo
    echo "[credentials]"
    echo "user = \"tungsten\""
    echo "password = \"secret\""
    echo
    echo "[connector]"
    echo "rw-listen = \"127.0.0.1:${RW_PORT[0]}\""
    echo "ro-listen = \"127.0.0.1:${RO_PORT[0]}\""
    echo
    echo "[security]"
    echo "token-file = \"secret\""
    echo
    echo "[manager]"
    echo "data-dir = \"manager\""
    echo
    echo "[replicator]"
    echo "thl-root = \"thl\""
    echo
    echo "[validate]"
    echo "min-thl-free-mb = 100"
    for i in "${!NODES[@]}"; do
      n=${NODES[$i]}
      echo
      echo "[[member]]"
      echo "name = \"$n\""
      echo "mysql = \"127.0.0.1:${DB_PORT[$i]}\""
      echo "replicator = \"127.0.0.1:${REPL_PORT[$i]}\""
      echo "thl = \"127.0.0.1:${THL_PORT[$i]}\""
      echo "manager = \"127.0.0.1:${MGR_PORT[$i]}\""
      if [ "$i" -eq 0 ]; then echo "role = \"master\""; else echo "role = \"slave\""; fi
      # three connectors on one host: each needs its own ports
      echo "rw-listen = \"127.0.0.1:${RW_PORT[$i]}\""
      echo "ro-listen = \"127.0.0.1:${RO_PORT[$i]}\""
    done
  } >"$f"
}

# --- commands ----------------------------------------------------------------

up() {
  [ -f "$SB/carbide.toml" ] && die "a sandbox already exists in $SB (scripts/sandbox.sh down first)"
  ensure_packages "${CARBIDE_PACKAGES[@]}" || die "missing packages"
  log "building carbide and carbide-replicator (release)"
  cargo build --release --quiet --workspace --bins
  mkdir -p "$SB"
  DB_PORT=() REPL_PORT=() THL_PORT=() MGR_PORT=() RW_PORT=() RO_PORT=()
  for i in "${!NODES[@]}"; do
    next_free_port $((9306 + 10 * i)); RW_PORT+=("$PORT")
    next_free_port $((9307 + 10 * i)); RO_PORT+=("$PORT")
    next_free_port $((13306 + i)); DB_PORT+=("$PORT")
    next_free_port $((10000 + i)); REPL_PORT+=("$PORT")
    next_free_port $((2112 + i)); THL_PORT+=("$PORT")
    next_free_port $((11999 + i)); MGR_PORT+=("$PORT")
  done
  target/release/carbide secret --out "$SB/secret" >/dev/null
  write_config
  for i in "${!NODES[@]}"; do
    local ro=ON
    [ "$i" -eq 0 ] && ro=OFF
    log "starting MariaDB ${NODES[$i]} on 127.0.0.1:${DB_PORT[$i]} (read_only=$ro)"
    start_db "${NODES[$i]}" "${DB_PORT[$i]}" $((i + 1)) "$ro"
    sql "${DB_PORT[$i]}" "SET sql_log_bin = 0;
      CREATE USER IF NOT EXISTS 'tungsten'@'127.0.0.1' IDENTIFIED BY 'secret';
      GRANT ALL PRIVILEGES ON *.* TO 'tungsten'@'127.0.0.1' WITH GRANT OPTION;
      CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app';
      GRANT ALL PRIVILEGES ON *.* TO 'app'@'127.0.0.1';"
  done
  log "carbide validate --config sandbox/carbide.toml"
  target/release/carbide validate --config "$SB/carbide.toml" || die "validation failed (see above)"
  start_replicators
  start_carbides
  cat <<MSG

carbide sandbox is up (config: sandbox/carbide.toml, service 'sandbox').

  Through a connector (what applications use; every member runs one):
    read-write (primary):   mariadb -h127.0.0.1 -P${RW_PORT[0]} -uapp -papp
    read-only (a replica):  mariadb -h127.0.0.1 -P${RO_PORT[0]} -uapp -papp
    (db2's connector: -P${RW_PORT[1]} / -P${RO_PORT[1]}; db3's: -P${RW_PORT[2]} / -P${RO_PORT[2]})
  The managers (cctrl, Tungsten's commands):
    target/release/cctrl -c sandbox/carbide.toml             (interactive; 'help' lists the commands)
    target/release/cctrl -c sandbox/carbide.toml -e ls
  Admin API of db1's carbide on 127.0.0.1:${MGR_PORT[0]} (db2: ${MGR_PORT[1]}, db3: ${MGR_PORT[2]}):
    curl -s 127.0.0.1:${MGR_PORT[0]}/status
    curl -s 127.0.0.1:${MGR_PORT[0]}/metrics
  carbide logs: sandbox/carbide-dbN.log; dataservice secret: sandbox/secret

  Replicators (one per member; admin API ports ${REPL_PORT[*]}):
    target/release/trepctl -conf sandbox/carbide.toml -member db1 status   (db1, master: binlog -> THL)
    target/release/trepctl -conf sandbox/carbide.toml -member db2 qs       (db2)
    (commands that change something need the secret of sandbox/secret;
     -conf reads it from the config's [security] table)
    target/release/thl list -conf sandbox/carbide.toml -member db1 -service sandbox
  Replicator logs: sandbox/replicator-dbN.log

  Directly:
  MariaDB db1 (master, writable):  mariadb -h127.0.0.1 -P${DB_PORT[0]} -uapp -papp
  MariaDB db2 (slave, read_only):  mariadb -h127.0.0.1 -P${DB_PORT[1]} -uapp -papp
  MariaDB db3 (slave, read_only):  mariadb -h127.0.0.1 -P${DB_PORT[2]} -uapp -papp
  root on each: mariadb -h127.0.0.1 -P<port> -uroot

  Re-check the setup:  target/release/carbide validate --config sandbox/carbide.toml
  Status:              scripts/sandbox.sh status
  Stop and clean:      scripts/sandbox.sh down
MSG
}

status() {
  [ -d "$SB" ] || { echo "no sandbox (scripts/sandbox.sh up starts one)"; return 0; }
  local n pid
  for n in "${NODES[@]}"; do
    pid=$(cat "$SB/carbide-$n.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then echo "$n  carbide (manager + connector) running (pid $pid)"; else echo "$n  carbide stopped"; fi
  done
  for n in "${NODES[@]}"; do
    pid=$(cat "$SB/replicator-$n.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then echo "$n  carbide-replicator running (pid $pid)"; else echo "$n  carbide-replicator stopped"; fi
  done
  for n in "${NODES[@]}"; do
    pid=$(cat "$SB/$n/mariadbd.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then echo "$n  MariaDB running (pid $pid)"; else echo "$n  MariaDB stopped"; fi
  done
}

stop_pidfile() { # file
  local pid i
  pid=$(cat "$1" 2>/dev/null || true)
  pid_alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do pid_alive "$pid" || return 0; sleep 0.1; done
  log "pid $pid did not stop in 30 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  [ -d "$SB" ] || { log "no sandbox to stop"; return 0; }
  local f
  # every process the sandbox started recorded its pid in sandbox/**/*.pid
  # (mariadbd.pid is ours; mysqld.pid is the server's own copy). The
  # carbide processes (managers and connectors) go first, so sessions end
  # before the servers do and no manager acts on what is being stopped.
  for f in "$SB"/carbide-*.pid; do
    [ -f "$f" ] || continue
    log "stopping carbide pid $(cat "$f") ($f)"
    stop_pidfile "$f"
    rm -f "$f"
  done
  # then the replicators, before the servers they read from and write to
  for f in "$SB"/replicator-*.pid; do
    [ -f "$f" ] || continue
    log "stopping pid $(cat "$f") ($f)"
    stop_pidfile "$f"
    rm -f "$f"
  done
  while IFS= read -r f; do
    log "stopping pid $(cat "$f") ($f)"
    stop_pidfile "$f"
  done < <(find "$SB" -name '*.pid' ! -name mysqld.pid)
  rm -rf "$SB"
  log "sandbox stopped and removed"
}

start_db_again() { # name
  local n=${1:-} i port ro=ON
  [ -f "$SB/carbide.toml" ] || die "no sandbox (scripts/sandbox.sh up starts one)"
  for i in "${!NODES[@]}"; do [ "${NODES[$i]}" = "$n" ] && break; done
  [ "${NODES[$i]:-}" = "$n" ] && [ -n "$n" ] || die "start-db: no member '$n' (members: ${NODES[*]})"
  pid_alive "$(cat "$SB/$n/mariadbd.pid" 2>/dev/null || true)" && die "MariaDB $n is running already"
  port=$(awk -v n="$n" '$1=="name" {cur=$3} $1=="mysql" && cur=="\""n"\"" {gsub(/"/,"",$3); split($3,a,":"); print a[2]}' "$SB/carbide.toml")
  [ -n "$port" ] || die "start-db: no mysql address for $n in $SB/carbide.toml"
  [ "$i" -eq 0 ] && ro=OFF
  log "starting MariaDB $n on 127.0.0.1:$port again (read_only=$ro)"
  start_db "$n" "$port" $((i + 1)) "$ro"
}

case "${1:-up}" in
  up) up ;;
  start-db) start_db_again "${2:-}" ;;
  down) down ;;
  status) status ;;
  -h|--help|help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (expected up, status, start-db NAME or down)" ;;
esac
