#!/usr/bin/env python3
"""A float64 reference of Gemma 3's forward pass, independent of kiln's kernel.

Follows transformers' `models/gemma3/modeling_gemma3.py` (`Gemma3ForCausalLM`) step by step,
in numpy float64: scaled embeddings (`Gemma3TextScaledWordEmbedding`), `Gemma3RMSNorm`
(`x / sqrt(mean(x²) + eps) · (1 + w)`), per-head q/k norms, rotate-half RoPE with the global
(`rope_theta`, linear `rope_scaling`) or local (`rope_local_base_freq`) base per layer type,
scores scaled by `query_pre_attn_scalar^-½`, a causal mask cut to `sliding_window` positions on
`sliding_attention` layers (`kv_idx > q_idx - sliding_window`), post-attention and
post-feed-forward norms, GeGLU with `gelu_pytorch_tanh`, tied output, optional final soft-cap.

Reads an HF directory (config.json, model.safetensors in F32) and token ids; writes the JSON
`tests/data/gemma3/hamlet-1024.json` holds (per-position logsumexp, target logit, top-10, the
perplexity) and the full logits of two positions as little-endian f32 files.

Usage: gemma3-hf-reference.py HF_DIR IDS_JSON N OUT_PREFIX
  IDS_JSON: a JSON list of token ids (llama-tokenize's, BOS first); the first N are used.
"""
import json
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, t in header.items():
            if name == "__metadata__":
                continue
            assert t["dtype"] == "F32", (name, t["dtype"])
            a, b = t["data_offsets"]
            f.seek(base + a)
            out[name] = np.frombuffer(f.read(b - a), dtype="<f4").reshape(t["shape"]).astype(np.float64)
    return out


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def main():
    hf_dir, ids_path, n, out_prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = json.load(open(f"{hf_dir}/config.json"))
    assert cfg["model_type"] == "gemma3_text"
    W = load_safetensors(f"{hf_dir}/model.safetensors")
    ids = json.load(open(ids_path))[:n]
    T = len(ids)
    H, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    window = cfg["sliding_window"]
    types = cfg["layer_types"]
    scaling = cfg["query_pre_attn_scalar"] ** -0.5
    scale_global = 1.0
    if cfg.get("rope_scaling"):
        assert cfg["rope_scaling"]["rope_type"] == "linear"
        scale_global = cfg["rope_scaling"]["factor"]

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w)

    pos = np.arange(T, dtype=np.float64)

    def rope_tables(base, factor):
        inv = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        ang = (pos / factor)[:, None] * inv[None, :]
        emb = np.concatenate([ang, ang], axis=-1)
        return np.cos(emb), np.sin(emb)

    ropes = {
        "full_attention": rope_tables(cfg["rope_theta"], scale_global),
        "sliding_attention": rope_tables(cfg["rope_local_base_freq"], 1.0),
    }

    def rotate_half(x):
        return np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)

    emb = W["model.embed_tokens.weight"]
    x = emb[ids] * (H ** 0.5)
    qi = np.arange(T)[:, None]
    ki = np.arange(T)[None, :]
    causal = ki <= qi
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        q = rms(q, W[p + "self_attn.q_norm.weight"])
        k = rms(k, W[p + "self_attn.k_norm.weight"])
        cos, sin = ropes[types[l]]
        q = q * cos[:, None, :] + rotate_half(q) * sin[:, None, :]
        k = k * cos[:, None, :] + rotate_half(k) * sin[:, None, :]
        allowed = causal & (ki > qi - window) if types[l] == "sliding_attention" else causal
        out = np.empty((T, nh, hd))
        for hh in range(nh):
            g = hh // (nh // nkv)
            s = (q[:, hh, :] @ k[:, g, :].T) * scaling
            s = np.where(allowed, s, -np.inf)
            s = s - s.max(axis=1, keepdims=True)
            e = np.exp(s)
            out[:, hh, :] = (e / e.sum(axis=1, keepdims=True)) @ v[:, g, :]
        a = out.reshape(T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        x = x + rms(a, W[p + "post_attention_layernorm.weight"])
        h = rms(x, W[p + "pre_feedforward_layernorm.weight"])
        f = (gelu_tanh(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        x = x + rms(f, W[p + "post_feedforward_layernorm.weight"])
        print(f"layer {l} done", file=sys.stderr)
    x = rms(x, W["model.norm.weight"])
    out_w = W.get("lm_head.weight", emb)
    cap = cfg.get("final_logit_softcapping")
    full_at = [T // 8, T - 100]
    lse, target, top_ids, top_logits = [], [], [], []
    for a in range(0, T - 1, 128):
        b = min(a + 128, T - 1)
        lg = x[a:b] @ out_w.T
        if cap:
            lg = np.tanh(lg / cap) * cap
        m = lg.max(axis=1, keepdims=True)
        lse.extend((m[:, 0] + np.log(np.exp(lg - m).sum(axis=1))).tolist())
        for j in range(b - a):
            row = lg[j]
            target.append(float(row[ids[a + j + 1]]))
            top = np.argsort(-row, kind="stable")[:10]
            top_ids.append([int(t) for t in top])
            top_logits.append([float(row[t]) for t in top])
            if a + j in full_at:
                row.astype("<f4").tofile(f"{out_prefix}-logits-{a + j}.f32")
    nll = np.array(lse) - np.array(target)
    ref = {
        "what": "float64 numpy forward of Gemma3ForCausalLM (scripts/gemma3-hf-reference.py) on the FP32 export of the Gemma-3-270M Q4_K_M fixture",
        "token_ids": ids,
        "positions": T,
        "logsumexp": lse,
        "target_logit": target,
        "top10_ids": top_ids,
        "top10_logits": top_logits,
        "perplexity": float(np.exp(nll.mean())),
        "full_logits_positions": full_at,
    }
    json.dump(ref, open(f"{out_prefix}.json", "w"))
    print(f"perplexity over {T - 1} predictions: {ref['perplexity']:.6f}", file=sys.stderr)


if __name__ == "__main__":
    main()
