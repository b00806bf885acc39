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
if clients_bin=$(scripts/install-clients.sh); then
    export DEVBOX_CLIENTS_DIR="$clients_bin"
else
    echo "test: the real-client tests (Claude Code, Codex, Gemini CLI, OpenCode, Pi) will be skipped" >&2
fi
# The tests' build first, then a wheel of it for tests/wheel.rs (scripts/wheel.sh --test shares
# its compiled crates; the shipped wheel, profile `dist`, is `scripts/wheel.sh`).
cargo test --release --locked --workspace --no-run
DEVBOX_WHEEL=$(scripts/wheel.sh --test | tail -n 1)
export DEVBOX_WHEEL
cargo test --release --locked --workspace
# The benchmark still works (3 runs, no Python original): bench/run.sh.
bench/run.sh --quick
