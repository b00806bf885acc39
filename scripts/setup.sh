#!/usr/bin/env bash
# Installs what a fresh machine lacks to build devbox-auth: the pinned toolchain (if missing)
# and its wasm32-wasip2 target. rustup does not add either by itself here
# (RUSTUP_AUTO_INSTALL=0), even though rust-toolchain.toml names the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$toolchain"; then
    echo "setup: installing Rust $toolchain" >&2
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 Rust target" >&2
    rustup target add --toolchain "$toolchain" wasm32-wasip2
fi
