#!/usr/bin/env bash
# Whole-process benchmark of devbox-auth against the loopback workspace emulation, side by side
# with the Python original (databricks-sdk from PyPI, in its own venv under target/bench-venv).
#
#   bench/run.sh            21 runs per scenario, with the Python original (BENCH_RUNS=N to change);
#                           then the network floor: cold start and rotation over TLS at 0, 30
#                           and 100 ms per request (BENCH_LATENCIES=0,30 to change)
#   bench/run.sh --quick    3 runs, no Python: checks the benchmark works (CI runs this)
#   BENCH_BIN=path          measure that binary (e.g. the wheel's, built by scripts/wheel.sh:
#                           target/x86_64-unknown-linux-gnu/dist/devbox-auth) instead of the
#                           release build
#   BENCH_COMPARE=path      also measure that build (e.g. another opt-level) in the same rounds:
#                           cold provision, cold custom policy, token
#
# The emulator runs as a separate process (target/release/devbox-emulator) and is not timed.
# Measurements: bench/measure.py (wait4 for wall time and peak RSS; /proc for watch idle).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
[ "${1:-}" = "--quick" ] && quick=true
runs=${BENCH_RUNS:-21}
$quick && runs=3

scripts/setup.sh
if [ ! -x /usr/bin/time ]; then
    echo "bench: installing GNU time (peak RSS per process)" >&2
    apt-get install -y -qq time >/dev/null
fi
# The same builds, with the same features and target dirs, as `cargo test --release --workspace`
# (dev-dependency features included): right after the tests (CI) they only link the
# emulator's binary, which `cargo test` does not build (its package has no integration tests;
# the host's tests use it as a library).
cargo build --release --locked --workspace --bins --tests
# The two policies as components, one package per build and each in dirs of its own: the
# strict policy reuses the default crate without its export, and built in the same dirs it
# would overwrite the default component (cargo hard-links the uplifted file).
policies=$PWD/target/tmp/bench-policies
cargo build --release --locked --target wasm32-wasip2 --target-dir "$policies/default" -p devbox-policy-default
cargo build --release --locked --target wasm32-wasip2 --target-dir "$policies/strict" -p devbox-policy-strict
bin=${BENCH_BIN:-$PWD/target/release/devbox-auth}
wasm=$policies/default/wasm32-wasip2/release

work=$(mktemp -d)
emulator_pid=
cleanup() {
    [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A custom policy shipped precompiled, pinned by a manifest.
cp "$policies/strict/wasm32-wasip2/release/devbox_policy_strict.wasm" "$work/strict.wasm"
"$bin" policy compile "$work/strict.wasm" -o "$work/strict.cwasm" > "$work/compile.txt"
{
    echo '[policy]'
    echo 'file = "strict.wasm"'
    grep -E '^(sha256|precompiled|precompiled_sha256) = ' "$work/compile.txt"
} > "$work/devbox-auth.toml"

target/release/devbox-emulator > "$work/emulator.out" &
emulator_pid=$!
for _ in $(seq 100); do grep -q '^url=' "$work/emulator.out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^url=//p' "$work/emulator.out")
[ -n "$url" ] || { echo "bench: the emulator did not start" >&2; exit 1; }

python_args=()
if ! $quick; then
    venv=$PWD/target/bench-venv
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import databricks.sdk' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'databricks-sdk==0.162.0'
    fi
    python_args=(--python "$venv/bin/python")
fi
[ -n "${BENCH_COMPARE:-}" ] && python_args+=(--compare "$BENCH_COMPARE")

python3 bench/measure.py --bin "$bin" --emulator "$url" \
    --custom "$work/strict.wasm" --manifest "$work/devbox-auth.toml" \
    --default-wasm "$wasm/devbox_policy_default.wasm" --cases "$PWD/guest/default/cases" \
    --runs "$runs" --idle-seconds "$($quick && echo 2 || echo 10)" "${python_args[@]}" \
    --emulator-bin "$PWD/target/release/devbox-emulator" --latencies "${BENCH_LATENCIES:-0,30,100}"
