#!/usr/bin/env bash
# Builds the devbox-auth wheel into dist/: the binary (profile `dist`: LTO, stripped) packaged by
# maturin (bindings = "bin"), linked against glibc 2.17 with zig so it installs and runs on any
# x86-64 Linux with glibc >= 2.17 (manylinux_2_17; Databricks Apps run Ubuntu 22.04, glibc
# 2.35). Everything comes from registries: maturin and ziglang from PyPI into target/wheel-venv.
#
#   scripts/wheel.sh        prints the wheel's absolute path on the last line
set -euo pipefail
cd "$(dirname "$0")/.."
maturin_version=1.16.0
ziglang_version=0.14.1
auditwheel_version=6.8.2

scripts/setup.sh
venv=target/wheel-venv
if ! "$venv/bin/maturin" --version 2>/dev/null | grep -q " $maturin_version\$"; then
    echo "wheel: installing maturin $maturin_version, ziglang $ziglang_version, auditwheel $auditwheel_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "maturin==$maturin_version" "ziglang==$ziglang_version" "auditwheel==$auditwheel_version"
fi
rm -rf dist
# maturin finds zig through the ziglang package in its own environment.
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/maturin" build --locked --zig \
    --compatibility manylinux_2_17 --target x86_64-unknown-linux-gnu \
    -m host/Cargo.toml --out dist >&2
wheel=$PWD/$(ls dist/devbox_auth-*.whl)
"$venv/bin/auditwheel" show "$wheel" >&2
echo "$wheel"
