#!/usr/bin/env bash
# The low-bit size-class table behind README's "kiln's methods in the low-bit tier" (issue #23):
# one `kiln build` on the continuous-weight copy of SmolLM2 (imatrix from 32 chunks of Macbeth,
# evaluation on 8 chunks of Hamlet, llama.cpp protocol, ctx 512) with llama.cpp's Q4_K_M,
# Q3_K_M and IQ4_XS mixes + imatrix (kiln writes them byte-identically to llama-quantize) and
# kiln's `method = ["search", "awq", "gptq", "alloc"]` at the Q3_K_M and IQ4_XS mixes' sizes.
# Prints the table from the build report (OUT_DIR/report.json, report.md / .html beside it).
# Usage: scripts/bench-lowbit-kld.sh [OUT_DIR]   (default target/bench-lowbit-kld; ~30 min on 2
# cores). Needs the fixtures (scripts/fetch-fixture.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-lowbit-kld}
fx=$PWD/.fixtures
[ -f "$fx/smollm2-cont-hf/model.safetensors" ] || { echo "run scripts/fetch-fixture.sh" >&2; exit 2; }
cargo build --release --quiet
mkdir -p "$out"
cat >"$out/kiln.toml" <<TOML
[model]
path = "$fx/smollm2-cont-hf"
name = "cont"

[calibration]
texts = ["$fx/texts/macbeth_gut.txt"]
ctx = 512
chunks = 32

[evaluation]
texts = ["$fx/texts/hamlet_gut.txt"]
ctx = 512
chunks = 8

[bench]
pp = 16
tg = 4
reps = 1

[[target]]
name = "q4km"
type = "Q4_K_M"
imatrix = true

[[target]]
name = "q3km"
type = "Q3_K_M"
imatrix = true

[[target]]
name = "iq4xs"
type = "IQ4_XS"
imatrix = true

[[target]]
name = "kiln-q3km"
type = "Q3_K_M"
imatrix = true
method = ["search", "awq", "gptq", "alloc"]

[[target]]
name = "kiln-iq4xs"
type = "IQ4_XS"
imatrix = true
method = ["search", "awq", "gptq", "alloc"]
TOML
target/release/kiln -q build "$out/kiln.toml" -o "$out/build" || true   # a failed check still reports
python3 - "$out/build/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["name"]: x for x in r["targets"]}
q4 = t["q4km"]["parity"]["kld"]["mean"]
print("| size class | llama.cpp-style bytes → kiln bytes | KLD mean | KLD p99 | top-1 | KLD ratio | vs Q4_K_M+imatrix |")
print("|---|---:|---:|---:|---:|---:|---:|")
for base, ours in [("iq4xs", "kiln-iq4xs"), ("q3km", "kiln-q3km")]:
    b, k = t[base], t[ours]
    kb, kk = b["parity"]["kld"], k["parity"]["kld"]
    print(f"| {b['ftype']} | {b['bytes']:,} → {k['bytes']:,} | {kb['mean']:.5f} → {kk['mean']:.5f} | "
          f"{kb['p99']:.3f} → {kk['p99']:.3f} | {100*b['parity']['top1']:.1f} % → {100*k['parity']['top1']:.1f} % | "
          f"**{kk['mean']/kb['mean']:.2f}×** | {kk['mean']:.5f} vs {q4:.5f} ({t['q4km']['bytes']:,} bytes) |")
PY
