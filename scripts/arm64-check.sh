#!/usr/bin/env bash
# The aarch64 checks .ci/run runs (issue #21), under user-mode QEMU on the x86 host:
#   1. cross-builds the workspace for aarch64-unknown-linux-gnu (Debian's rustc 1.96);
#   2. runs the kernels and quantize crates' tests at each CPU model: cortex-a72 (NEON, the
#      Raspberry Pi 4), cortex-a76 (NEON + dotprod, the Pi 5), max (NEON + dotprod + i8mm);
#   3. checks `kiln types` names the level each CPU model gets, that KILN_SIMD caps it to the
#      next level down, and that a name of another architecture is refused (exit 2);
#   4. kernel_digest: every kernel path's bits on each CPU model equal the host's (x86);
#   5. byte identity: the aarch64 kiln writes the x86 kiln's imatrix and its Q8_0, Q4_K_M,
#      Q5_K_M, Q3_K_M, IQ4_XS (with that imatrix) and `--method search,gptq` artifacts (Q4_K_M,
#      Q3_K_M, IQ4_XS), byte for byte, on a
#      generated Qwen2.5-config checkpoint; and the real SmolLM2's imatrix (short text);
#   6. the real model under emulation: SmolLM2's perplexity on a short text equals the x86
#      figure (within 1e-4 relative; it is expected to be equal), SIMD vs scalar within 1e-4
#      relative, and one token at a time (decode kernels) gives the batch's (prefill kernels')
#      perplexity exactly.
# Usage: scripts/arm64-check.sh [HOST_KILN]   (needs the SmolLM2 fixture: scripts/fetch-fixture.sh)
# ARM64_CPUS="…" runs steps 2–4 at these CPU models only (empty: none, for a quick rerun of
# 5–6); the test binaries of step 2 run at ARM64_TEST_CPUS (default cortex-a72 and max: the
# lowest and the highest level; cortex-a76's dotprod level is also max's, and a76 still gets
# steps 3, 4 and 6). ARM64_FULL=1 adds SmolLM2's Q8_0 / Q4_K_M / Q5_K_M artifacts (≈2 min of emulation each).
set -euo pipefail
cd "$(dirname "$0")/.."
host_kiln=${1:-target/release/kiln}
scripts/arm64-setup.sh
# Debian's cargo and rustc (the rustc with the aarch64 standard library) for the aarch64
# side; the host side keeps the project's toolchain.
xcargo() { RUSTC=/usr/bin/rustc /usr/bin/cargo "$@"; }
T=aarch64-unknown-linux-gnu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
step() { echo "-- arm64 [$(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "arm64-check: FAILED: $*" >&2; exit 1; }

step "cross-build (kiln, kernel_digest, the kernels and quantize tests)"
xcargo build --release --quiet --target $T -p kiln --bin kiln -p kernels --example kernel_digest
xcargo test --release --quiet --target $T -p kernels -p quantize --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
' >"$tmp/tests"
[ -s "$tmp/tests" ] || fail "no test binaries were built"
kiln=target/$T/release/kiln
digest=target/$T/release/examples/kernel_digest
cargo build --release --quiet -p kernels --example kernel_digest
"target/release/examples/kernel_digest" >"$tmp/digest-host" 2>/dev/null

declare -A level=([cortex-a72]=neon [cortex-a76]=neon+dotprod [max]=neon+dotprod+i8mm)
for cpu in ${ARM64_CPUS-cortex-a72 cortex-a76 max}; do
  q="qemu-aarch64 -cpu $cpu"
  if [[ " ${ARM64_TEST_CPUS-cortex-a72 max} " == *" $cpu "* ]]; then
    step "$cpu: tests"
    while read -r t; do
      $q "$t" -q --test-threads 2 >"$tmp/log" 2>&1 || { cat "$tmp/log"; fail "$cpu: $(basename "$t")"; }
      grep 'test result' "$tmp/log" | sed "s|^|   $cpu $(basename "$t" | sed 's/-[0-9a-f]*$//'): |"
    done <"$tmp/tests"
  fi
  step "$cpu: levels"
  got=$($q $kiln types | sed -n 's/^simd: //p')
  [ "$got" = "${level[$cpu]}" ] || fail "$cpu: kiln types says '$got', expected ${level[$cpu]}"
  [ "$(KILN_SIMD=neon $q $kiln types | sed -n 's/^simd: //p')" = neon ] || fail "$cpu: KILN_SIMD=neon"
  [ "$(KILN_FORCE_SCALAR=1 $q $kiln types | sed -n 's/^simd: //p')" = scalar ] || fail "$cpu: KILN_FORCE_SCALAR"
  capped=$(KILN_SIMD=i8mm $q $kiln types | sed -n 's/^simd: //p')
  [ "$capped" = "${level[$cpu]}" ] || fail "$cpu: KILN_SIMD=i8mm gave $capped"
  rc=0; KILN_SIMD=avx2 $q $kiln types >/dev/null 2>"$tmp/err" || rc=$?
  [ $rc = 2 ] && grep -q 'KILN_SIMD=avx2' "$tmp/err" || fail "$cpu: KILN_SIMD=avx2 gave exit $rc"
  step "$cpu: kernel digest against the host's"
  $q $digest >"$tmp/digest-$cpu" 2>"$tmp/log" || { cat "$tmp/log"; fail "$cpu: SIMD levels disagree"; }
  diff "$tmp/digest-host" "$tmp/digest-$cpu" || fail "$cpu: kernel bits differ from the host's"
  echo "   $(wc -l <"$tmp/digest-$cpu") cases, every level: the host's bits"
done

q="qemu-aarch64 -cpu max"
step "byte identity on a generated Qwen2.5-config checkpoint"
cargo build --release --quiet -p convert --example make-family
pre=$(target/release/examples/make-family "$tmp/fam" qwen2.5)
head -c 20000 .fixtures/texts/macbeth_gut.txt >"$tmp/calib.txt"
head -c 6000 .fixtures/texts/hamlet_gut.txt >"$tmp/eval.txt"
same() { cmp -s "$1" "$2" || fail "$3: $1 and $2 differ"; echo "   $3: identical ($(stat -c %s "$1") bytes)"; }
"$host_kiln" -q convert "$tmp/fam" -o "$tmp/fam.gguf" --type f32 --tokenizer-pre "$pre"
for who in x86 arm; do
  run=("$host_kiln"); [ $who = arm ] && run=($q $kiln)
  "${run[@]}" -q calibrate "$tmp/fam.gguf" --text "$tmp/calib.txt" --ctx 128 --chunks 4 -o "$tmp/imx-$who.gguf"
  for ty in Q8_0 Q4_K_M Q5_K_M; do
    "${run[@]}" -q quantize "$tmp/fam" -o "$tmp/$ty-$who.gguf" --type $ty --imatrix "$tmp/imx-x86.gguf" \
      --tokenizer-pre "$pre"
  done
  "${run[@]}" -q quantize "$tmp/fam" -o "$tmp/gptq-$who.gguf" --type Q4_K_M --method search,gptq \
    --calib-text "$tmp/calib.txt" --hessian-chunks 2 --tokenizer-pre "$pre"
  # The low-bit tier: llama.cpp's mixes with the imatrix, and kiln's grids under GPTQ.
  for ty in Q3_K_M IQ4_XS; do
    "${run[@]}" -q quantize "$tmp/fam" -o "$tmp/$ty-$who.gguf" --type $ty --imatrix "$tmp/imx-x86.gguf" \
      --tokenizer-pre "$pre"
    "${run[@]}" -q quantize "$tmp/fam" -o "$tmp/gptq-$ty-$who.gguf" --type $ty --method search,gptq \
      --imatrix "$tmp/imx-x86.gguf" --calib-text "$tmp/calib.txt" --hessian-chunks 2 --tokenizer-pre "$pre"
  done
done
same "$tmp/imx-x86.gguf" "$tmp/imx-arm.gguf" "imatrix"
for ty in Q8_0 Q4_K_M Q5_K_M; do same "$tmp/$ty-x86.gguf" "$tmp/$ty-arm.gguf" "$ty with imatrix"; done
same "$tmp/gptq-x86.gguf" "$tmp/gptq-arm.gguf" "Q4_K_M --method search,gptq"
for ty in Q3_K_M IQ4_XS; do
  same "$tmp/$ty-x86.gguf" "$tmp/$ty-arm.gguf" "$ty with imatrix"
  same "$tmp/gptq-$ty-x86.gguf" "$tmp/gptq-$ty-arm.gguf" "$ty --method search,gptq"
done

smol=.fixtures/smollm2-f32.gguf
[ -f "$smol" ] || fail "$smol is missing: run scripts/fetch-fixture.sh first"
step "SmolLM2-135M: imatrix (2 chunks of 64 tokens)"
"$host_kiln" -q calibrate "$smol" --text "$tmp/calib.txt" --ctx 64 --chunks 2 -o "$tmp/smol-imx-x86.gguf"
$q $kiln -q calibrate "$smol" --text "$tmp/calib.txt" --ctx 64 --chunks 2 -o "$tmp/smol-imx-arm.gguf"
same "$tmp/smol-imx-x86.gguf" "$tmp/smol-imx-arm.gguf" "SmolLM2 imatrix"
if [ "${ARM64_FULL:-0}" = 1 ]; then
  for ty in Q8_0 Q4_K_M Q5_K_M; do
    "$host_kiln" -q quantize "$smol" -o "$tmp/smol-$ty-x86.gguf" --type $ty --imatrix "$tmp/smol-imx-x86.gguf"
    $q $kiln -q quantize "$smol" -o "$tmp/smol-$ty-arm.gguf" --type $ty --imatrix "$tmp/smol-imx-x86.gguf"
    same "$tmp/smol-$ty-x86.gguf" "$tmp/smol-$ty-arm.gguf" "SmolLM2 $ty with imatrix"
  done
fi

step "SmolLM2-135M: perplexity (1 chunk of 64 tokens) at cortex-a76"
ppl() { # RUNNER (a command, word-split) then perplexity flags
  local runner=$1; shift
  $runner perplexity "$smol" --text "$tmp/eval.txt" --ctx 64 --chunks 1 --json "$@" 2>/dev/null |
    python3 -c 'import json,sys; print(repr(json.load(sys.stdin)["ppl"]))'
}
a76="qemu-aarch64 -cpu cortex-a76 $kiln"
p_x86=$(ppl "$host_kiln")
p_arm=$(ppl "$a76")
p_scalar=$(ppl "$a76" --force-scalar)
p_decode=$(ppl "$a76" --batch 1)
python3 - "$p_x86" "$p_arm" "$p_scalar" "$p_decode" <<'PY'
import sys
x86, arm, scalar, decode = map(float, sys.argv[1:])
rel = lambda a, b: abs(a - b) / b
print(f"   ppl x86 {x86!r}, aarch64 {arm!r} (rel {rel(arm, x86):.1e}), aarch64 scalar {scalar!r} "
      f"(rel {rel(scalar, arm):.1e}), one token at a time {decode!r}")
ok = rel(arm, x86) <= 1e-4 and rel(scalar, arm) <= 1e-4 and decode == arm
if not ok:
    sys.exit("arm64-check: FAILED: perplexity")
PY
step "done"
