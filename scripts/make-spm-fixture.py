#!/usr/bin/env python3
"""Generates the Llama-2-style SentencePiece tokenizer of tests/data/llama2-spm/.

Trains a SentencePiece BPE model with Llama 2's trainer settings (byte fallback, digits split,
whitespace-only pieces allowed, identity normalization, a dummy prefix; <unk> <s> </s> at ids
0, 1, 2) on three plays that the tests do not tokenize, then lets transformers convert it to the
fast tokenizer's tokenizer.json exactly as a Llama 2 checkpoint ships it (LlamaTokenizerFast,
legacy behaviour), and records the ids Hugging Face's own `tokenizers` gives on the test plays
from that tokenizer.json.

Then, independently of kiln, the GGUF tokenizer metadata llama.cpp's converter makes from that
directory: `_create_vocab_sentencepiece` of convert_hf_to_gguf.py (restated below with the
sentencepiece library, whose protobuf reader is not kiln's) and gguf-py's SpecialVocab, written by
gguf-py's GGUFWriter as a vocabulary-only GGUF (`vocab.gguf`) that llama-tokenize can load.

Needs: sentencepiece, transformers and tokenizers (scripts/llamacpp-reference.sh installs the
pinned versions into a venv) and llama.cpp's gguf-py on PYTHONPATH.
Usage: make-spm-fixture.py TEXTS_DIR OUT_DIR
"""
import hashlib
import json
import os
import sys

import sentencepiece as spm

texts, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
train = [os.path.join(texts, f) for f in ("tempest_gut.txt", "twelfth_night_gut.txt", "winters_tale_gut.txt")]
spm.SentencePieceTrainer.train(
    input=",".join(train),
    model_prefix=os.path.join(out, "tokenizer"),
    model_type="bpe",
    vocab_size=4000,
    character_coverage=0.99995,
    byte_fallback=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    num_threads=1,
    seed_sentencepiece_size=200000,
    minloglevel=2,
)
os.remove(os.path.join(out, "tokenizer.vocab"))

from transformers import LlamaTokenizerFast  # noqa: E402

# From the directory holding only tokenizer.model, as a Llama 2 repository is loaded.
tok = LlamaTokenizerFast.from_pretrained(out, legacy=True)
tok.save_pretrained(out)
for extra in ("special_tokens_map.json", "chat_template.jinja"):
    p = os.path.join(out, extra)
    if os.path.exists(p):
        os.remove(p)

from tokenizers import Tokenizer  # noqa: E402

hf = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
ref = {"what": "ids of Hugging Face's tokenizers on tokenizer.json (add_special_tokens=True)", "plays": {}}
for play in ("hamlet", "othello", "macbeth"):
    ids = hf.encode(open(os.path.join(texts, f"{play}_gut.txt")).read()).ids
    ref["plays"][play] = {"n_tokens": len(ids), "sha256": hashlib.sha256(str(ids).encode()).hexdigest(), "head": ids[:64]}
with open(os.path.join(out, "hf-tokenizers-ids.json"), "w") as f:
    json.dump(ref, f, indent=1)
    f.write("\n")

# convert_hf_to_gguf.py's `_create_vocab_sentencepiece` (vocab_size from config.json = the
# model's; no added_tokens.json here), then the added_tokens_decoder of tokenizer_config.json.
import gguf  # noqa: E402

sp = spm.SentencePieceProcessor()
sp.LoadFromFile(os.path.join(out, "tokenizer.model"))
vocab_size = sp.vocab_size()
tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
scores = [-10000.0] * vocab_size
types = [gguf.TokenType.UNUSED] * vocab_size
for i in range(vocab_size):
    t = gguf.TokenType.NORMAL
    if sp.IsUnknown(i):
        t = gguf.TokenType.UNKNOWN
    elif sp.IsControl(i):
        t = gguf.TokenType.CONTROL
    elif sp.IsUnused(i):
        t = gguf.TokenType.UNUSED
    elif sp.IsByte(i):
        t = gguf.TokenType.BYTE
    tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), t
tc = json.load(open(os.path.join(out, "tokenizer_config.json")))
for tid, data in tc.get("added_tokens_decoder", {}).items():
    tid = int(tid)
    text = data["content"]
    if data.get("special"):
        types[tid] = gguf.TokenType.CONTROL
    else:
        text = text.replace("\u2581", " ")
        types[tid] = gguf.TokenType.USER_DEFINED
    scores[tid], tokens[tid] = -1000.0, text.encode()
w = gguf.GGUFWriter(os.path.join(out, "vocab.gguf"), "llama")
for k, v in [("context_length", 256), ("embedding_length", 64), ("block_count", 2), ("feed_forward_length", 128),
             ("attention.head_count", 4)]:
    getattr(w, "add_" + k.replace("attention.", "").replace(".", "_"))(v)
w.add_layer_norm_rms_eps(1e-5)
w.add_tokenizer_model("llama")
w.add_tokenizer_pre("default")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
gguf.SpecialVocab(out, n_vocab=len(tokens)).add_to_gguf(w)
w.write_header_to_file()
w.write_kv_data_to_file()
w.close()
import struct  # noqa: E402

conv = {
    "what": "tokens, scores and types as convert_hf_to_gguf.py's _create_vocab_sentencepiece makes them (sentencepiece library): SHA-256 of the tokens' UTF-8 each followed by a NUL byte, of the scores as little-endian f32, of the types as little-endian i32",
    "n_tokens": len(tokens),
    "tokens_sha256": hashlib.sha256(b"".join(t + b"\0" for t in tokens)).hexdigest(),
    "scores_sha256": hashlib.sha256(b"".join(struct.pack("<f", x) for x in scores)).hexdigest(),
    "types_sha256": hashlib.sha256(b"".join(struct.pack("<i", int(x)) for x in types)).hexdigest(),
}
with open(os.path.join(out, "converter-vocab.json"), "w") as f:
    json.dump(conv, f, indent=1)
    f.write("\n")
print(f"wrote {out}")
