#!/usr/bin/env bash
# Runs carbide's whole test suite against real MariaDB servers.
#
# Installs what is missing first (MariaDB server and client, sysbench,
# HAProxy; via apt-get when running as root), then checks formatting and
# runs `cargo test --workspace`. Extra arguments go to cargo test, e.g.
#   scripts/test.sh -p carbide-config
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh

ensure_packages "${CARBIDE_PACKAGES[@]}" sysbench:sysbench haproxy:haproxy

# a client that speaks the compressed protocol its own way (t09)
if ! python3 -c "import mysql.connector" 2>/dev/null; then
  echo "== pip install mysql-connector-python==9.1.0 (for tests/t09_connector_compression.rs)"
  python3 -m pip install -q mysql-connector-python==9.1.0 || echo "carbide: could not install mysql-connector-python; t09's Python checks will say they are skipped" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo test --workspace $*"
cargo test --workspace --no-fail-fast "$@"
