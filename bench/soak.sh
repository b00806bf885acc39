#!/usr/bin/env bash
# The long chaos soak: tests/soak.rs (watch with 6 s tokens and a real app, a seeded schedule of
# workspace faults, helpers SIGKILLed at random, the same invariants checked every 100 ms) for
# an hour instead of CI's 95 s. Prints the run's one-line summary (samples, live tokens,
# requests per minute, CPU, kills, shutdown times); exits non-zero if an invariant broke.
#
#   bench/soak.sh [SEED ...]          default seed 42; DEVBOX_SOAK_SECONDS=3600 unless set
#
# The same seed replays the same fault schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DEVBOX_SOAK_SECONDS=${DEVBOX_SOAK_SECONDS:-3600}
[ $# -eq 0 ] && set -- 42
cargo test --release --locked -p devbox-auth --test soak --no-run
for seed in "$@"; do
    DEVBOX_SOAK_SEED=$seed cargo test --release --locked -p devbox-auth --test soak -- --nocapture 2>&1 |
        grep --line-buffered -E '^soak:|panicked|^test result' -A3
done
