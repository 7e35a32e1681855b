#!/usr/bin/env bash
# A benchmark (not a test) of the aarch64 kiln under user-mode QEMU: kiln's NEON, dotprod and
# i8mm levels against its scalar path and against llama.cpp's own aarch64 build, on the same
# GGUF files (default: SmolLM2-135M Q4_K_M and Q8_0), prefill and decode tokens per second.
#
# EMULATED TIME IS ONLY A PROXY FOR INSTRUCTION COST: QEMU translates each aarch64 instruction
# into host code, vector and floating-point instructions at very different costs from a real
# core's, with no model of caches or memory bandwidth. The ratios say which code runs fewer
# (emulated) instructions, not how a Cortex-A76 would rank them; measure on the device
# (`kiln bench` there) for real figures.
#
# llama.cpp is cross-compiled once into .baseline/arm64/ from the same pinned source
# scripts/llamacpp-build.sh uses (llama-cpp-python 0.3.36's vendored llama.cpp), with
# aarch64-linux-gnu-g++, statically linked, for armv8.6-a+dotprod+i8mm (so it runs at
# -cpu max; its runtime checks pick its kernels), OpenMP off.
#
# Usage: scripts/arm64-bench.sh [-c CPU] [-p PP] [-n TG] [-r REPS] [GGUF...]
#        (default: -c max -p 64 -n 16 -r 2; 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=max pp=64 tg=16 reps=2
while getopts "c:p:n:r:" o; do
  case $o in
    c) cpu=$OPTARG ;; p) pp=$OPTARG ;; n) tg=$OPTARG ;; r) reps=$OPTARG ;;
    *) echo "usage: $0 [-c CPU] [-p PP] [-n TG] [-r REPS] [GGUF...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
models=("$@")
scripts/arm64-build.sh >/dev/null
kiln=target/aarch64-unknown-linux-gnu/release/kiln
host=target/release/kiln
[ -x "$host" ] || cargo build --release --quiet
if [ ${#models[@]} -eq 0 ]; then
  scripts/fetch-fixture.sh "$host" smollm2 >/dev/null
  for ty in Q4_K_M Q8_0; do
    f=.fixtures/smollm2-$(echo $ty | tr A-Z a-z).gguf
    [ -f "$f" ] || "$host" -q quantize .fixtures/smollm2-f32.gguf -o "$f" --type $ty
    models+=("$f")
  done
fi

# llama.cpp for aarch64, once.
version=0.3.36
src=.baseline/llama_cpp_python-$version/vendor/llama.cpp
bdir=.baseline/arm64
lbench=$bdir/bin/llama-bench
if [ ! -x "$lbench" ]; then
  [ -d "$src" ] || scripts/llamacpp-build.sh llama-bench >/dev/null
  command -v aarch64-linux-gnu-g++ >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  cmake -S "$src" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux \
    -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc \
    -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DGGML_NATIVE=OFF \
    -DGGML_CPU_ARM_ARCH=armv8.6-a+dotprod+i8mm -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF \
    -DCMAKE_EXE_LINKER_FLAGS=-static -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$bdir.cmake.log" 2>&1
  cmake --build "$bdir" --target llama-bench -j"$(nproc)" >"$bdir.build.log" 2>&1 ||
    { echo "arm64-bench: building llama.cpp for aarch64 failed, see $bdir.build.log" >&2; exit 1; }
fi

q="qemu-aarch64 -cpu $cpu"
echo "# kiln (aarch64) under qemu-aarch64 -cpu $cpu, 2 threads, pp $pp, tg $tg, $reps reps"
echo "# EMULATED: a proxy for instruction cost only, not device speed"
echo
echo "| model | runner | prefill tok/s | decode tok/s |"
echo "|---|---|---|---|"
kiln_row() { # model label env...
  local m=$1 label=$2; shift 2
  env "$@" $q $kiln -q bench "$m" --pp "$pp" --tg "$tg" --reps "$reps" --threads 2 --format json |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
t = {r["test"][:2]: r["tokens_per_s"] for r in d["tests"]}
f = lambda k: "%.2f" % t[k] if k in t else "-"
print("| %s | %s (%s) | %s | %s |" % (sys.argv[1], sys.argv[2], d["simd"], f("pp"), f("tg")))
' "$(basename "$m")" "$label"
}
for m in "${models[@]}"; do
  kiln_row "$m" "kiln scalar" KILN_FORCE_SCALAR=1
  for l in neon dotprod i8mm; do kiln_row "$m" "kiln $l" KILN_SIMD=$l; done
  $q $lbench -m "$m" -t 2 -p "$pp" -n "$tg" -r "$reps" -o json 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
pp = next((r for r in rows if r["n_prompt"] > 0), None)
tg = next((r for r in rows if r["n_gen"] > 0), None)
f = lambda r: "%.2f" % r["avg_ts"] if r else "-"
print("| %s | llama.cpp | %s | %s |" % (sys.argv[1], f(pp), f(tg)))
' "$(basename "$m")"
done
