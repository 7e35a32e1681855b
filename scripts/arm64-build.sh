#!/usr/bin/env bash
# Builds the aarch64 kiln a user copies to a device: a release binary for
# aarch64-unknown-linux-gnu, statically linked (.cargo/config.toml: crt-static), so it runs on
# any aarch64 Linux whatever its glibc (Raspberry Pi OS, Ubuntu 20.04+, Jetson's L4T …).
# Writes dist/kiln-<version>-aarch64-linux (and a .sha256 beside it); prints the path.
# Usage: scripts/arm64-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/arm64-setup.sh
export RUSTC=/usr/bin/rustc # Debian's: the one with the aarch64 standard library
/usr/bin/cargo build --release --quiet --target aarch64-unknown-linux-gnu -p kiln --bin kiln
bin=target/aarch64-unknown-linux-gnu/release/kiln
if readelf -l "$bin" | grep -q 'INTERP'; then
  echo "arm64-build: $bin is dynamically linked (crt-static not applied?)" >&2
  exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p dist
out="dist/kiln-$version-aarch64-linux"
cp "$bin" "$out.tmp"
aarch64-linux-gnu-strip "$out.tmp"
mv "$out.tmp" "$out"
(cd dist && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
echo "$out"
