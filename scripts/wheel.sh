#!/usr/bin/env bash
# Builds the devbox-auth wheel: the binary packaged by maturin (bindings = "bin").
#
#   scripts/wheel.sh          the shipped wheel, into dist/: profile `dist` (LTO, stripped),
#                             linked against glibc 2.17 with zig (manylinux_2_17_x86_64: any x86-64
#                             Linux with glibc >= 2.17; Databricks Apps run Ubuntu 22.04, glibc
#                             2.35), checked by auditwheel; fails if it is 9.5 MB or more
#                             (Databricks Apps refuse files of 10 MB).
#   scripts/wheel.sh --test   a wheel of the tests' own `release` build, into target/wheel-test/,
#                             for tests/wheel.rs (installs and runs like the shipped one; it shares
#                             the tests' compiled crates instead of compiling wasmtime again).
#
# Prints the wheel's absolute path on the last line. Everything comes from registries: maturin,
# ziglang and auditwheel from PyPI into target/wheel-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
maturin_version=1.16.0
ziglang_version=0.14.1
auditwheel_version=6.8.2
# Databricks Apps refuse any file of 10 MB (10,000,000 bytes) or more; keep a margin.
max_bytes=9500000

scripts/setup.sh
venv=target/wheel-venv
if ! "$venv/bin/maturin" --version 2>/dev/null | grep -q " $maturin_version\$"; then
    echo "wheel: installing maturin $maturin_version, ziglang $ziglang_version, auditwheel $auditwheel_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "maturin==$maturin_version" "ziglang==$ziglang_version" "auditwheel==$auditwheel_version"
fi
if [ "${1:-}" = "--test" ]; then
    out=target/wheel-test
    # A feature the tests' build has and the host alone lacks makes this compile wasmtime again.
    scripts/feature-drift.sh || echo "wheel: the test wheel will compile those crates a second time" >&2
    rm -rf "$out"
    "$venv/bin/maturin" build --locked --profile release --compatibility linux \
        -m host/Cargo.toml --out "$out" >&2
    echo "$PWD/$(ls "$out"/devbox_auth-*.whl)"
    exit 0
fi
rm -rf dist
# maturin finds zig through the ziglang package in its own environment.
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/maturin" build --locked --zig \
    --compatibility manylinux_2_17 --target x86_64-unknown-linux-gnu \
    -m host/Cargo.toml --out dist >&2
wheel=$PWD/$(ls dist/devbox_auth-*.whl)
"$venv/bin/auditwheel" show "$wheel" >&2
size=$(stat -c %s "$wheel")
if [ "$size" -ge "$max_bytes" ]; then
    echo "wheel: $wheel is $size bytes, over the $max_bytes-byte budget (Databricks Apps refuse files of 10 MB); make the binary smaller" >&2
    exit 1
fi
echo "wheel: $size bytes (budget $max_bytes)" >&2
echo "$wheel"
