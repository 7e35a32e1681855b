#!/usr/bin/env bash
# The attention-mask benchmark behind README's "Attention masks by quality budget" tables: for
# each context, `kiln masks --max-kld` on SmolLM2-135M FP32 (calibrated on Hamlet, measured on
# Macbeth), which measures dense and every static and content-aware setting side by side in
# one run and prints the curve (density, keys scored, KLD, top-1, attention / prefill / decode
# speed-ups over dense). Plots and JSON land in OUT_DIR.
# Usage: scripts/bench-masks.sh [OUT_DIR] [CTX…]   (default: target/bench-masks 2048 4096 8192)
# Needs the fixture (scripts/fetch-fixture.sh). 8192 takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-masks}
shift || true
ctxs=("$@")
[ ${#ctxs[@]} -gt 0 ] || ctxs=(2048 4096 8192)
cargo build --release --quiet
mkdir -p "$out"
for ctx in "${ctxs[@]}"; do
  echo "## ctx $ctx"
  target/release/kiln -q masks .fixtures/smollm2-f32.gguf \
    --text .fixtures/texts/hamlet_gut.txt --eval-text .fixtures/texts/macbeth_gut.txt \
    --max-kld "${MAX_KLD:-0.01}" --ctx "$ctx" --chunks 2 --eval-ctx "$ctx" --eval-chunks 1 \
    --plot "$out/masks-$ctx.svg" | sed -n '/^| kind/,$p'
  echo
done
