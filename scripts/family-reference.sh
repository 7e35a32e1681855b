#!/usr/bin/env bash
# Records, for each generated family checkpoint (convert::testing::FAMILIES: Llama 3.2, Qwen2.5,
# Qwen3, SmolLM3, Mistral, Phi-3.5-mini, Phi-4-mini — config.json keys of the public models,
# scaled down), what the independent references say, as tests/data/families/<family>/ (checked by tests/families.rs):
#
#   reference.json
#     convert     llama.cpp's own convert_hf_to_gguf.py (pinned source; torch from PyPI in a venv
#                 under .baseline/) on the checkpoint: every metadata key but the provenance
#                 ones (general.name, size_label, basename, finetune: naming, not function) — arrays by
#                 SHA-256 of a canonical byte form — and every tensor's shape, type and SHA-256
#     perplexity  llama-perplexity -c 256 --chunks 8 on hamlet, on kiln's F32 GGUF: the final
#                 perplexity, the argmax of every scored position (--kl-divergence-base) and
#                 every warning line llama.cpp logged while loading and running the file
#     hf          transformers' forward (float32, eager) on the checkpoint under the same
#                 protocol on llama-tokenize's ids (scripts/hf-reference.py) — for Mistral the
#                 window of the checkpoint, which llama.cpp's `llama` graph does not have
#     hf_export   the same transformers forward on `kiln export` of kiln's F32 GGUF: the
#                 exported config.json and weights load as the family's model (perplexity)
#     quantize    llama-quantize of kiln's F32 GGUF to Q8_0, Q4_K_M, Q5_K_M with the imatrix below:
#                 each tensor's type and SHA-256
#     long_context  for a LongRoPE checkpoint (Phi-3): llama-perplexity and transformers again at
#                 twice the pre-training context, where both run the long factors (at 256, the
#                 pre-training context, both run the short ones)
#   imatrix.gguf  llama-imatrix -c 256 --chunks 8 on macbeth, on kiln's F32 GGUF
#
# Needs the texts (scripts/fetch-fixture.sh target/release/kiln smollm2) and a release build.
# Usage: scripts/family-reference.sh [FAMILY...]
set -euo pipefail
cd "$(dirname "$0")/.."
fams=("$@")
[ ${#fams[@]} -gt 0 ] || fams=(llama3.2 qwen2.5 qwen3 smollm3 mistral phi3.5 phi4-mini)
bin=$(scripts/llamacpp-build.sh llama-perplexity llama-tokenize llama-imatrix llama-quantize)
src=$(dirname "$(dirname "$bin")")
texts=.fixtures/texts
[ -f "$texts/hamlet_gut.txt" ] || { echo "family-reference: run scripts/fetch-fixture.sh target/release/kiln smollm2 first" >&2; exit 1; }
cargo build --release --quiet -p kiln -p convert --bin kiln --example make-family
kiln=target/release/kiln
venv=.baseline/venv-torch
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet torch==2.9.1 transformers==4.57.3 safetensors==0.8.0 sentencepiece==0.2.3 \
  protobuf==7.36.2 numpy==2.4.6 tokenizers==0.22.2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for f in "${fams[@]}"; do
  echo "== $f" >&2
  out=tests/data/families/$f
  mkdir -p "$out"
  ck=$tmp/$f
  pre=$(target/release/examples/make-family "$ck" "$f")
  args=()
  [ -n "$pre" ] && args=(--tokenizer-pre "$pre")
  "$kiln" -q convert "$ck" -o "$tmp/$f.gguf" --type f32 "${args[@]}" >/dev/null 2>&1
  "$venv/bin/python" scripts/convert-hf-reference.py "$src" "$ck" "$tmp/$f-ref.gguf" "$pre" >"$tmp/$f-conv.log" 2>&1 ||
    { cat "$tmp/$f-conv.log" >&2; exit 1; }
  "$bin/llama-tokenize" -m "$tmp/$f.gguf" -f "$texts/hamlet_gut.txt" --ids --log-disable 2>/dev/null >"$tmp/ids.txt"
  python3 -c "import ast,json,sys; json.dump(ast.literal_eval(open('$tmp/ids.txt').read().strip()), open('$tmp/ids.json','w'))"
  "$bin/llama-perplexity" -m "$tmp/$f.gguf" -f "$texts/hamlet_gut.txt" -c 256 --chunks 8 -t 2 \
    --kl-divergence-base "$tmp/kld" >"$tmp/ppl.log" 2>&1
  "$venv/bin/python" scripts/kld-argmax.py "$tmp/kld" "$tmp/ppl.log" >"$tmp/ppl.json"
  read -r add_bos bos < <("$venv/bin/python" - "$src" "$tmp/$f.gguf" <<'PY'
import sys
sys.path.insert(0, sys.argv[1] + "/gguf-py")
from gguf import GGUFReader
r = GGUFReader(sys.argv[2])
f = lambda k: r.fields[k].contents() if k in r.fields else None
# llama.cpp's default when the key is absent: BOS for SentencePiece (`llama`), none for BPE.
add = f("tokenizer.ggml.add_bos_token")
if add is None:
    add = f("tokenizer.ggml.model") == "llama"
print(1 if add else 0, f("tokenizer.ggml.bos_token_id") or 0)
PY
)
  "$venv/bin/python" scripts/hf-reference.py "$ck" "$tmp/ids.json" 256 8 "$add_bos" "$bos" >"$tmp/hf.json" 2>"$tmp/hf.log" ||
    { cat "$tmp/hf.log" >&2; exit 1; }
  # transformers on kiln's export of the F32 GGUF (its config.json and weights as HF reads them).
  "$kiln" -q export "$tmp/$f.gguf" "$tmp/$f-export" >/dev/null 2>&1
  "$venv/bin/python" scripts/hf-reference.py "$tmp/$f-export" "$tmp/ids.json" 256 8 "$add_bos" "$bos" >"$tmp/hf-export.json" 2>"$tmp/hf.log" ||
    { cat "$tmp/hf.log" >&2; exit 1; }
  # LongRoPE (Phi-3): also at twice the pre-training context, where both run the long factors.
  orig=$(python3 -c "import json; print(json.load(open('$ck/config.json')).get('original_max_position_embeddings') or 0)")
  rm -f "$tmp/long.json"
  if [ "$orig" -gt 0 ] && [ "$orig" -le 512 ]; then
    lctx=$((2 * orig))
    "$bin/llama-perplexity" -m "$tmp/$f.gguf" -f "$texts/hamlet_gut.txt" -c "$lctx" --chunks 8 -t 2 \
      --kl-divergence-base "$tmp/kld-long" >"$tmp/ppl-long.log" 2>&1
    "$venv/bin/python" scripts/kld-argmax.py "$tmp/kld-long" "$tmp/ppl-long.log" >"$tmp/ppl-long.json"
    "$venv/bin/python" scripts/hf-reference.py "$ck" "$tmp/ids.json" "$lctx" 8 "$add_bos" "$bos" >"$tmp/hf-long.json" 2>"$tmp/hf.log" ||
      { cat "$tmp/hf.log" >&2; exit 1; }
    python3 -c "import json; json.dump({'ctx': $lctx, 'perplexity': json.load(open('$tmp/ppl-long.json')), 'hf': json.load(open('$tmp/hf-long.json'))}, open('$tmp/long.json', 'w'))"
  fi
  (cd "$texts" && "$OLDPWD/$bin/llama-imatrix" -m "$tmp/$f.gguf" -f macbeth_gut.txt -c 256 --chunks 8 -t 2 \
    -o "$OLDPWD/$out/imatrix.gguf" >"$tmp/imatrix.log" 2>&1) || { cat "$tmp/imatrix.log" >&2; exit 1; }
  for ty in Q8_0 Q4_K_M Q5_K_M; do
    "$bin/llama-quantize" --imatrix "$out/imatrix.gguf" "$tmp/$f.gguf" "$tmp/$f-$ty.gguf" "$ty" 2 >"$tmp/q.log" 2>&1 ||
      { cat "$tmp/q.log" >&2; exit 1; }
  done
  "$venv/bin/python" - "$src" "$tmp" "$f" "$out/reference.json" <<'PY'
import hashlib, json, os, struct, sys
src, tmp, fam, dest = sys.argv[1:5]
sys.path.insert(0, src + "/gguf-py")
sys.path.insert(0, "scripts")
from gguf import GGUFReader
from gguf_tensors import gguf_tensors

def plain(v):
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v

r = GGUFReader(f"{tmp}/{fam}-ref.gguf")
meta = {}
for k, fld in r.fields.items():
    if k.startswith("GGUF.") or k in ("general.name", "general.size_label", "general.basename", "general.finetune"):
        continue
    v = plain(fld.contents())
    if isinstance(v, list):
        # Arrays by the SHA-256 of a canonical byte form: strings joined by NUL, integers as
        # little-endian i64, floats as little-endian f32, booleans as bytes.
        if v and isinstance(v[0], str):
            raw = b"\0".join(x.encode() for x in v)
        elif v and isinstance(v[0], bool):
            raw = bytes(int(x) for x in v)
        elif v and isinstance(v[0], int):
            raw = b"".join(struct.pack("<q", x) for x in v)
        else:
            raw = b"".join(struct.pack("<f", x) for x in v)
        v = {"sha256": hashlib.sha256(raw).hexdigest(), "len": len(v)}
    meta[k] = v
tensors = {t.name: {"shape": [int(x) for x in t.shape], "type": t.tensor_type.name} for t in r.tensors}
for name, d in gguf_tensors(f"{tmp}/{fam}-ref.gguf").items():
    tensors[name]["sha256"] = d["sha256"]
ppl = json.load(open(f"{tmp}/ppl.json"))
hf = json.load(open(f"{tmp}/hf.json"))
ref = {
    "what": f"references for the generated {fam} checkpoint; made by scripts/family-reference.sh "
            "(llama.cpp from llama-cpp-python 0.3.36's vendored source; transformers 4.57.3, torch 2.9.1, float32)",
    "convert": {"metadata": meta, "tensors": tensors},
    "perplexity": {"ctx": 256, "chunks": 8, "ppl": ppl["ppl"], "argmax": ppl["argmax"],
                   "warnings": [l for l in open(f"{tmp}/ppl.log").read().splitlines() if " W " in l or "warning" in l.lower()]},
    "hf": hf,
    "quantize": {ty: gguf_tensors(f"{tmp}/{fam}-{ty}.gguf") for ty in ["Q8_0", "Q4_K_M", "Q5_K_M"]},
}
ref["hf_export"] = {"ppl": json.load(open(f"{tmp}/hf-export.json"))["ppl"]}
if os.path.exists(f"{tmp}/long.json"):
    ref["long_context"] = json.load(open(f"{tmp}/long.json"))
with open(dest, "w") as f:
    json.dump(ref, f, sort_keys=True, separators=(",", ":"))
    f.write("\n")
print(f"wrote {dest}: llama.cpp ppl {ppl['ppl']:.4f}, transformers ppl {hf['ppl']:.4f}")
PY
done
