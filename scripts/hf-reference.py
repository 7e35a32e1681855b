"""Hugging Face's own forward (transformers, float32, eager attention) on a checkpoint
directory, under llama-perplexity's protocol: the token ids of the text (given, as llama.cpp
tokenizes it) in chunks of CTX, BOS first in each chunk when the model adds one, and the second
half of each chunk scored. Prints JSON: the perplexity, and the argmax of every scored position.
Usage: hf-reference.py CHECKPOINT_DIR IDS_JSON CTX CHUNKS ADD_BOS BOS_ID
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM

ckpt, ids_path, ctx, chunks, add_bos, bos = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6])
ids = json.load(open(ids_path))
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
# A checkpoint tensor the model does not use, or one it needs and lacks, is an error here.
sd = model.state_dict()
n_chunk = min(chunks, len(ids) // ctx)
first = ctx // 2
nll, argmax = 0.0, []
count = 0
with torch.no_grad():
    for c in range(n_chunk):
        toks = list(ids[c * ctx:(c + 1) * ctx])
        if add_bos:
            toks[0] = bos
        logits = model(torch.tensor([toks])).logits[0].double()
        lp = torch.log_softmax(logits, dim=-1)
        for j in range(first, ctx - 1):
            nll -= lp[j, toks[j + 1]].item()
            argmax.append(int(torch.argmax(logits[j]).item()))
            count += 1
print(json.dumps({"ppl": math.exp(nll / count), "argmax": argmax}))
