#!/usr/bin/env bash
# Records llama-quantize's low-bit mixes (Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, IQ4_NL, IQ4_XS), without
# and with tests/data/smollm2/imatrix-macbeth.gguf, of the SmolLM2 F32 GGUF, as
# tests/data/smollm2/llama-quantize-lowbit.json (the format of llama-quantize-reference.json:
# per mix the file size, general.file_type, and each tensor's type and the SHA-256 of its bytes).
# tests/mixes.rs checks kiln's mixes against it. llama-quantize is built from the pinned source
# by scripts/llamacpp-build.sh. Needs the fixture: scripts/fetch-fixture.sh target/release/kiln.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/llamacpp-build.sh llama-quantize)
f32=.fixtures/smollm2-f32.gguf
[ -f "$f32" ] || { echo "llamacpp-lowbit-reference: run scripts/fetch-fixture.sh target/release/kiln first" >&2; exit 1; }
imatrix=tests/data/smollm2/imatrix-macbeth.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ty in Q2_K Q3_K_S Q3_K_M Q3_K_L IQ4_NL IQ4_XS; do
  for im in none macbeth; do
    args=()
    [ "$im" = macbeth ] && args=(--imatrix "$imatrix")
    echo "== llama-quantize $ty ($im)" >&2
    "$bin/llama-quantize" "${args[@]}" "$f32" "$tmp/$ty-$im.gguf" "$ty" 2 >"$tmp/$ty-$im.log" 2>&1 ||
      { cat "$tmp/$ty-$im.log" >&2; exit 1; }
  done
done
python3 - "$tmp" tests/data/smollm2/llama-quantize-lowbit.json <<'PY'
import json, os, struct, sys
sys.path.insert(0, "scripts")
from gguf_tensors import gguf_tensors
tmp, out = sys.argv[1:3]
names = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K", 11: "Q3_K",
         12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 20: "IQ4_NL", 23: "IQ4_XS", 30: "BF16"}
def file_type(path):
    # general.file_type, found by its key in the header (a u32 value follows the key and type).
    data = open(path, "rb").read(64 << 20)
    key = b"general.file_type"
    i = data.index(key) + len(key)
    t, v = struct.unpack_from("<II", data, i)
    assert t == 4, t
    return v
ref = {
    "what": "llama-quantize (llama.cpp, ggml 0.25.3, CPU) applied to the SmolLM2 F32 GGUF, 2 threads: the low-bit tier",
    "commands": "llama-quantize [--imatrix imatrix-macbeth.gguf] smollm2-f32.gguf OUT.gguf TYPE 2",
    "mixes": {},
}
for f in sorted(os.listdir(tmp)):
    if not f.endswith(".gguf"):
        continue
    p = os.path.join(tmp, f)
    tensors = {n: {"type": names[t["type"]], "sha256": t["sha256"]} for n, t in gguf_tensors(p).items()}
    ref["mixes"][f[:-5]] = {"file_bytes": os.path.getsize(p), "general.file_type": file_type(p), "tensors": tensors}
with open(out, "w") as o:
    json.dump(ref, o, indent=1)
    o.write("\n")
print(f"wrote {out}: {len(ref['mixes'])} mixes")
PY

# A generated checkpoint whose widths are multiples of 256 (SmolLM2's 576 sends most matrices
# to the fallback types), with grouped-query attention (4 query heads per kv head) and 16
# layers, so every rule of the six mixes and the Q2_K / Q3_K / IQ4_XS quantizers themselves
# are exercised; the imatrix is kiln's on macbeth. tests/mixes.rs regenerates the same
# checkpoint (seeded) and checks kiln's mixes against tests/data/synthetic-lowbit/.
syn=tests/data/synthetic-lowbit
mkdir -p "$syn"
cargo run --release -q -p convert --example make-checkpoint "$tmp/ckpt" --hidden 256 --ffn 768 \
  --layers 16 --heads 4 --kv-heads 1 --seed 7
target/release/kiln -q convert "$tmp/ckpt" -o "$tmp/syn-f32.gguf" --type f32 --tokenizer-pre gpt-2
target/release/kiln -q calibrate "$tmp/syn-f32.gguf" --text .fixtures/texts/macbeth_gut.txt \
  --ctx 128 --chunks 8 -o "$syn/imatrix.gguf"
mkdir -p "$tmp/syn"
for ty in Q2_K Q3_K_S Q3_K_M Q3_K_L IQ4_NL IQ4_XS; do
  for im in none kiln; do
    args=()
    [ "$im" = kiln ] && args=(--imatrix "$syn/imatrix.gguf")
    echo "== llama-quantize synthetic $ty ($im)" >&2
    "$bin/llama-quantize" "${args[@]}" "$tmp/syn-f32.gguf" "$tmp/syn/$ty-$im.gguf" "$ty" 2 \
      >"$tmp/syn-$ty-$im.log" 2>&1 || { cat "$tmp/syn-$ty-$im.log" >&2; exit 1; }
  done
done
python3 - "$tmp/syn" "$syn/llama-quantize.json" <<'PY'
import json, os, sys
sys.path.insert(0, "scripts")
from gguf_tensors import gguf_tensors
tmp, out = sys.argv[1:3]
names = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K", 11: "Q3_K",
         12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 20: "IQ4_NL", 23: "IQ4_XS", 30: "BF16"}
ref = {
    "what": "llama-quantize (ggml 0.25.3) of a generated Llama checkpoint (make-checkpoint --hidden 256 --ffn 768 --layers 16 --heads 4 --kv-heads 1 --seed 7, kiln convert --type f32), 2 threads",
    "commands": "llama-quantize [--imatrix imatrix.gguf] syn-f32.gguf OUT.gguf TYPE 2",
    "mixes": {},
}
for f in sorted(os.listdir(tmp)):
    p = os.path.join(tmp, f)
    ref["mixes"][f[:-5]] = {"tensors": {n: {"type": names[t["type"]], "sha256": t["sha256"]}
                                        for n, t in gguf_tensors(p).items()}}
with open(out, "w") as o:
    json.dump(ref, o, indent=1)
    o.write("\n")
print(f"wrote {out}: {len(ref['mixes'])} mixes")
PY

# llama-perplexity loads and evaluates kiln's own low-bit artifacts of SmolLM2 (ctx 512, 8 chunks
# of hamlet, KLD against the F32 GGUF): tests/data/smollm2/llama-perplexity-lowbit.json, the
# format of llama-perplexity-hamlet.json. tests/mixes.rs checks kiln verify's numbers against it.
pbin=$(scripts/llamacpp-build.sh llama-perplexity)
hamlet=.fixtures/texts/hamlet_gut.txt
"$pbin/llama-perplexity" -m "$f32" -f "$hamlet" -c 512 --chunks 8 -t 2 \
  --kl-divergence-base "$tmp/base.kld" >"$tmp/base.log" 2>&1 || { cat "$tmp/base.log" >&2; exit 1; }
mkdir -p "$tmp/ppl"
for ty in Q2_K Q3_K_S Q3_K_M Q3_K_L IQ4_NL IQ4_XS; do
  for im in none macbeth; do
    args=()
    [ "$im" = macbeth ] && args=(--imatrix "$imatrix")
    target/release/kiln -q quantize "$f32" -o "$tmp/kiln-$ty-$im.gguf" --type "$ty" "${args[@]}"
    echo "== llama-perplexity on kiln's $ty ($im)" >&2
    "$pbin/llama-perplexity" -m "$tmp/kiln-$ty-$im.gguf" -f "$hamlet" -c 512 --chunks 8 -t 2 \
      --kl-divergence-base "$tmp/base.kld" --kl-divergence >"$tmp/ppl/$ty-$im.log" 2>&1 ||
      { cat "$tmp/ppl/$ty-$im.log" >&2; exit 1; }
  done
done
python3 - "$tmp/ppl" tests/data/smollm2/llama-perplexity-lowbit.json <<'PY'
import json, os, re, sys
logs, out = sys.argv[1:3]
pat = {"ppl": r"Mean PPL\(Q\)\s*:\s*([\d.]+)", "kld_mean": r"Mean\s+KLD:\s*([\d.]+)",
       "kld_median": r"Median\s+KLD:\s*([\d.]+)", "kld_p99": r"99\.0%\s+KLD:\s*([\d.]+)",
       "kld_max": r"Maximum KLD:\s*([\d.]+)", "same_top1_pct": r"Same top p:\s*([\d.]+)"}
ref = {"what": "llama-perplexity (llama.cpp, CPU, 2 threads) on hamlet_gut.txt, -c 512 --chunks 8, base = smollm2-f32.gguf via --kl-divergence-base, candidates = kiln's low-bit artifacts (kiln quantize of smollm2-f32.gguf, without and with imatrix-macbeth.gguf)",
       "mixes": {}}
for f in sorted(os.listdir(logs)):
    text = open(os.path.join(logs, f)).read()
    ref["mixes"][f[:-4]] = {k: float(re.search(p, text).group(1)) for k, p in pat.items()}
with open(out, "w") as o:
    json.dump(ref, o, indent=1)
    o.write("\n")
print(f"wrote {out}: {len(ref['mixes'])} mixes")
PY
