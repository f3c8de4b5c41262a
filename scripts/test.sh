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

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo test --workspace $*"
cargo test --workspace --no-fail-fast "$@"
