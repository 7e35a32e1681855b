#!/usr/bin/env bash
# Measures kiln against llama.cpp on this machine, in the same run, on the same GGUF files.
#
# llama.cpp's `llama-bench` is built by scripts/llamacpp-build.sh (the pinned llama-cpp-python
# sdist's vendored source, the CPU's SIMD flags, AMX off).
#
# Each model is measured by both tools in turn (kiln first, then llama.cpp, then the next
# model), with the same threads, prompt length, generated tokens and repetitions; the table
# gives tokens/s ± the spread across repetitions and kiln's ratio.
#
# Usage: scripts/bench-llamacpp.sh [-t THREADS] [-p PP] [-n TG] [-r REPS] GGUF...
#        (default: -t 2 -p 512 -n 128 -r 3; without GGUF files: the fixture as F32, Q8_0 and
#        Q4_K_M, fetched by scripts/fetch-fixture.sh and quantized by kiln if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2 pp=512 tg=128 reps=3
while getopts "t:p:n:r:" o; do
  case $o in
    t) threads=$OPTARG ;;
    p) pp=$OPTARG ;;
    n) tg=$OPTARG ;;
    r) reps=$OPTARG ;;
    *) echo "usage: $0 [-t THREADS] [-p PP] [-n TG] [-r REPS] GGUF..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
models=("$@")
kiln=target/release/kiln
[ -x "$kiln" ] || cargo build --release --quiet
if [ ${#models[@]} -eq 0 ]; then
  # The fixture as F32, Q8_0 and Q4_K_M (made from its FP32 directory if not there yet).
  scripts/fetch-fixture.sh "$kiln" >&2
  for t in Q8_0:q8 Q4_K_M:q4km; do
    f=".fixtures/${t#*:}.gguf"
    [ -f "$f" ] || "$kiln" --quiet quantize .fixtures/smollm2-hf -o "$f" --type "${t%%:*}" >&2
  done
  models=(.fixtures/smollm2-f32.gguf .fixtures/q8.gguf .fixtures/q4km.gguf)
fi

bench="$(scripts/llamacpp-build.sh llama-bench)/llama-bench"
base=.baseline

out="$base/results"
rm -rf "$out" && mkdir -p "$out"
for i in "${!models[@]}"; do
  m=${models[$i]}
  echo "== $m: kiln" >&2
  "$kiln" bench "$m" --pp "$pp" --tg "$tg" --reps "$reps" --threads "$threads" --format json >"$out/kiln-$i.json"
  echo "== $m: llama.cpp" >&2
  "$bench" -m "$m" -t "$threads" -p "$pp" -n "$tg" -r "$reps" -o json 2>"$out/llama-$i.log" >"$out/llama-$i.json"
done

python3 - "$out" "${#models[@]}" "$pp" "$tg" "$threads" <<'PY'
import json, os, sys
out, n, pp, tg, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"| model | test | kiln t/s | llama.cpp t/s | kiln / llama.cpp |")
print("|---|---|---:|---:|---:|")
for i in range(n):
    k = json.load(open(os.path.join(out, f"kiln-{i}.json")))
    l = json.load(open(os.path.join(out, f"llama-{i}.json")))
    for test, want in ((f"pp{pp}", (pp, 0)), (f"tg{tg}", (0, tg))):
        kt = next((t for t in k["tests"] if t["test"] == test), None)
        lt = next((r for r in l if (r["n_prompt"], r["n_gen"]) == want), None)
        if kt is None or lt is None:
            continue
        ratio = kt["tokens_per_s"] / lt["avg_ts"]
        print(f"| {k['model']} | {test} | {kt['tokens_per_s']:.1f} ± {kt['stddev']:.1f} "
              f"| {lt['avg_ts']:.1f} ± {lt['stddev_ts']:.1f} | {ratio:.2f}× |")
print(f"\n{threads} threads; memory read bandwidth in kiln's runs: "
      + ", ".join(f"{json.load(open(os.path.join(out, f'kiln-{i}.json')))['memory_bandwidth_gbs']:.1f}"
                  for i in range(n)) + " GB/s")
PY
