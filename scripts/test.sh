#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ccr_dir=$(scripts/install-ccr.sh); then
    export DEVBOX_CCR_DIR="$ccr_dir"
else
    echo "test: the real-CCR test will be skipped (set DEVBOX_REQUIRE_CCR=1 to make that an error)" >&2
fi
cargo test --release --locked --workspace
