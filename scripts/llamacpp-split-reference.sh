#!/usr/bin/env bash
# Records what llama.cpp (built from the pinned source by scripts/llamacpp-build.sh) does with
# kiln's split GGUF files, as tests/data/smollm2/llama-gguf-split.json (checked by
# tests/shard.rs):
#   input        SHA-256 of kiln's unsplit Q4_K_M of the SmolLM2 fixture (what the rest is of)
#   split        llama-gguf-split --split --split-max-tensors 68 of that file: each file's SHA-256
#   merge        llama-gguf-split --merge of kiln's `--shard i/4` files (written by four
#                separate kiln runs into four directories, collected in one): its SHA-256
#   perplexity   llama-perplexity -c 128 --chunks 4 on hamlet of the unsplit file and of kiln's
#                split files (llama.cpp opens the first and finds the others)
# Needs the fixture: scripts/fetch-fixture.sh target/release/kiln smollm2.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/llamacpp-build.sh llama-gguf-split llama-perplexity)
kiln=${KILN:-target/release/kiln}
fx=.fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$kiln" -q quantize "$fx/smollm2-f32.gguf" -o "$work/m.gguf" --type Q4_K_M >/dev/null
mkdir -p "$work/llama" "$work/shards"
"$bin/llama-gguf-split" --split --split-max-tensors 68 "$work/m.gguf" "$work/llama/m" >/dev/null
for i in 1 2 3 4; do
  mkdir -p "$work/job$i"
  "$kiln" -q quantize "$fx/smollm2-f32.gguf" -o "$work/job$i/m.gguf" --type Q4_K_M --shard "$i/4" >/dev/null
  cp "$work/job$i/"m-0000"$i"-of-00004.gguf "$work/shards/"
done
"$bin/llama-gguf-split" --merge "$work/shards/m-00001-of-00004.gguf" "$work/merged.gguf" >/dev/null 2>&1
ppl() { "$bin/llama-perplexity" -m "$1" -f "$fx/texts/hamlet_gut.txt" -c 128 --chunks 4 -t 2 2>&1 |
  sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
p_one=$(ppl "$work/m.gguf")
p_split=$(ppl "$work/shards/m-00001-of-00004.gguf")
sha() { sha256sum "$1" | cut -d' ' -f1; }
python3 - "$work" "$p_one" "$p_split" "$(sha "$work/m.gguf")" "$(sha "$work/merged.gguf")" \
  "$(for f in "$work"/llama/*.gguf; do echo "$(basename "$f")=$(sha "$f")"; done)" <<'PY' >tests/data/smollm2/llama-gguf-split.json
import json, sys
work, p_one, p_split, sha_in, sha_merged, splits = sys.argv[1:7]
print(json.dumps({
  "what": "llama-gguf-split and llama-perplexity on kiln's Q4_K_M of the SmolLM2 fixture (scripts/llamacpp-split-reference.sh)",
  "input_sha256": sha_in,
  "split_max_tensors": 68,
  "split": dict(l.split("=") for l in splits.split()),
  "merge_of_shards_4_sha256": sha_merged,
  "perplexity": {"ctx": 128, "chunks": 4, "text": "hamlet_gut.txt", "unsplit": float(p_one), "split_4": float(p_split)},
}, indent=1))
PY
cat tests/data/smollm2/llama-gguf-split.json
