#!/usr/bin/env bash
# Installs what the aarch64 build and its emulated checks need, from Debian's packages (no
# rustup target can be fetched on this project's machines): Debian's rustc/cargo 1.96 with the
# aarch64 standard library (multiarch), the cross linker and C library, and user-mode QEMU.
# Idempotent: does nothing when everything is there. Needs root (apt-get) otherwise.
set -euo pipefail

have() {
  [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && command -v aarch64-linux-gnu-gcc >/dev/null &&
    command -v qemu-aarch64 >/dev/null &&
    [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu/lib" ]
}
if have; then exit 0; fi

echo "arm64-setup: installing Debian's rustc-web, cargo-web, the aarch64 std, gcc-aarch64-linux-gnu, qemu-user" >&2
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web libstd-rust-web-dev:arm64 \
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
have || { echo "arm64-setup: the toolchain is still incomplete after installing" >&2; exit 1; }
