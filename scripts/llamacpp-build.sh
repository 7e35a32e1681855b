#!/usr/bin/env bash
# Builds llama.cpp's command-line tools once into .baseline/ (git-ignored), from the source the
# pinned llama-cpp-python sdist on PyPI vendors (SHA-256 checked; package registries are what
# this project's machines reach), with the CPU's AVX / AVX2 / FMA / F16C / AVX-512 / VNNI / BF16
# flags. AMX is left off: on the 2-core Sapphire Rapids VMs this project runs on, llama.cpp's
# AMX matmul (ggml_backend_amx_mul_mat) dies with SIGSEGV on the first batch.
#
# The tools are the oracle kiln is checked against (scripts/bench-llamacpp.sh,
# scripts/llamacpp-reference.sh). Idempotent; prints the directory holding the binaries.
# Usage: scripts/llamacpp-build.sh [TOOL...]   (default: every tool kiln compares with)
set -euo pipefail
cd "$(dirname "$0")/.."

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(llama-bench llama-quantize llama-perplexity llama-tokenize llama-imatrix llama-gguf-split)
version=0.3.36
sdist_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
base=.baseline
src="$base/llama_cpp_python-$version/vendor/llama.cpp"
bin="$src/build/bin"
mkdir -p "$base"
# One build at a time (tests that need the tools run in parallel).
exec 9>"$base/.build-lock"
flock 9

flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
config=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF
  -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)
  -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VNNI=$(has avx512_vnni)
  -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF)
# Tools built for other CPU flags (a cached .baseline/ that moved machines, or one from before
# this record) are built again: they could use instructions this CPU lacks.
if [ -d "$src/build" ] && [ "$(cat "$src/build/kiln-config" 2>/dev/null)" != "${config[*]}" ]; then
  rm -rf "$src/build"
fi

need=()
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  tarball="$base/llama_cpp_python-$version.tar.gz"
  if [ ! -f "$tarball" ]; then
    # The project's JSON index (some mirrors give relative file addresses: resolve them).
    python3 - "$version" "$tarball.part" <<'PY'
import json, shutil, sys, urllib.parse, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = "https://pypi.org/pypi/llama-cpp-python/json"
meta = json.load(urllib.request.urlopen(index))
sdist = next(u for u in meta["releases"][version] if u["packagetype"] == "sdist")
with urllib.request.urlopen(urllib.parse.urljoin(index, sdist["url"])) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
    mv "$tarball.part" "$tarball"
  fi
  echo "$sdist_sha  $tarball" | sha256sum -c --quiet - ||
    { echo "llamacpp-build: $tarball has the wrong SHA-256" >&2; rm -f "$tarball"; exit 1; }
  [ -d "$src" ] || tar -xzf "$tarball" -C "$base"
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  mkdir -p "$src/build" && echo "${config[*]}" >"$src/build/kiln-config"
  cmake -S "$src" -B "$src/build" "${config[@]}" >"$base/cmake.log" 2>&1
  cmake --build "$src/build" --target "${need[@]}" -j"$(nproc)" >"$base/build.log" 2>&1 ||
    { echo "llamacpp-build: building ${need[*]} failed, see $base/build.log" >&2; exit 1; }
fi
echo "$bin"
