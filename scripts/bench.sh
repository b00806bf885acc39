#!/usr/bin/env bash
# Start-up benchmark: medians of wall time and peak RSS for devbox-auth provision against the
# loopback Databricks emulator (tests/bench.rs). DEVBOX_BENCH_RUNS=N sets the repetitions.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --locked -p devbox-auth --test bench -- --ignored --nocapture
