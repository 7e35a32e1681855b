"""Reads llama-perplexity's output.

Usage: kld-argmax.py KLD_BASE_FILE LOG
"""
# The --kl-divergence-base file: "_logits_", n_ctx, n_vocab, n_chunk, the tokens, then for
# every scored position (the second half of each chunk) two floats (scale, min log-prob) and
# n_vocab uint16 log-probs, 0 meaning "16 or more below the top". From it: the argmax and the
# NLL of the next token (to 2.4e-4; null where clamped) of every scored position.
import json, re, struct, sys
import numpy as np
kld, log = sys.argv[1], open(sys.argv[2]).read()
with open(kld, "rb") as f:
    assert f.read(8) == b"_logits_"
    n_ctx, n_vocab, n_chunk = struct.unpack("<iii", f.read(12))
    tokens = np.frombuffer(f.read(4 * n_chunk * n_ctx), dtype=np.int32)
    nv = 2 * ((n_vocab + 1) // 2) + 4
    first = n_ctx // 2
    n_tok = n_ctx - 1 - first
    argmax, nll = [], []
    for c in range(n_chunk):
        block = np.frombuffer(f.read(2 * nv * n_tok), dtype=np.uint16).reshape(n_tok, nv)
        head = block[:, :4].copy().view(np.float32)
        argmax.extend(int(i) for i in np.argmax(block[:, 4:4 + n_vocab], axis=1))
        for i in range(n_tok):
            q = int(block[i, 4 + tokens[c * n_ctx + first + i + 1]])
            nll.append(None if q == 0 else round(-float(head[i, 1] + head[i, 0] * q), 5))
chunks = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", log)]
final = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
print(json.dumps({"ppl": final, "per_chunk": chunks, "argmax": argmax, "nll": nll}))
