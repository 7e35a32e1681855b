//! Hugging Face ↔ llama.cpp tensor names, expected shapes, and the Q/K row permutation.
//!
//! Names follow llama.cpp's `gguf-py/gguf/tensor_mapping.py` for the Llama family. The
//! permutation is `LlamaModel.permute` of `convert_hf_to_gguf.py`: within each head, the rows
//! of the two RoPE halves are interleaved so that llama.cpp's adjacent-pair RoPE equals HF's
//! rotate-half RoPE.

use crate::config::ModelConfig;

/// Per-layer tensors: (HF suffix after `model.layers.N.`, GGUF suffix after `blk.N.`).
pub const LAYER_TENSORS: [(&str, &str); 12] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
];

/// Model-level tensors: (HF name, GGUF name).
pub const GLOBAL_TENSORS: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// HF tensors that carry no weights (recomputed by every runtime); listed, then skipped.
pub fn is_ignorable(hf: &str) -> bool {
    hf.ends_with("rotary_emb.inv_freq") || hf.ends_with(".masked_bias") || hf.ends_with("attn.bias")
}

/// The GGUF name of an HF tensor.
pub fn hf_to_gguf(hf: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL_TENSORS.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, suffix) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    LAYER_TENSORS
        .iter()
        .find(|(h, _)| *h == suffix)
        .map(|(_, g)| format!("blk.{n}.{g}"))
}

/// The HF name of a GGUF tensor.
pub fn gguf_to_hf(g: &str) -> Option<String> {
    if let Some((h, _)) = GLOBAL_TENSORS.iter().find(|(_, gg)| *gg == g) {
        return Some(h.to_string());
    }
    let rest = g.strip_prefix("blk.")?;
    let (n, suffix) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    LAYER_TENSORS
        .iter()
        .find(|(_, gg)| *gg == suffix)
        .map(|(h, _)| format!("model.layers.{n}.{h}"))
}

/// The layer index of a GGUF tensor name (`blk.N.…`).
pub fn layer_of(g: &str) -> Option<usize> {
    g.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
}

/// Every GGUF tensor the model has, in the order kiln writes them, with its HF shape
/// (outermost first).
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let q = c.n_heads * c.head_dim;
    let kv = c.n_kv_heads * c.head_dim;
    let mut out = vec![("token_embd.weight".to_string(), vec![v, h])];
    for n in 0..c.n_layers {
        let mut push = |s: &str, shape: Vec<usize>| out.push((format!("blk.{n}.{s}"), shape));
        push("attn_norm.weight", vec![h]);
        push("attn_q.weight", vec![q, h]);
        push("attn_k.weight", vec![kv, h]);
        push("attn_v.weight", vec![kv, h]);
        if c.qkv_bias {
            push("attn_q.bias", vec![q]);
            push("attn_k.bias", vec![kv]);
            push("attn_v.bias", vec![kv]);
        }
        push("attn_output.weight", vec![h, q]);
        push("ffn_norm.weight", vec![h]);
        push("ffn_gate.weight", vec![f, h]);
        push("ffn_up.weight", vec![f, h]);
        push("ffn_down.weight", vec![h, f]);
    }
    out.push(("output_norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("output.weight".to_string(), vec![v, h]));
    }
    out
}

/// How many heads the Q/K permutation of `gguf_name` uses, if it applies.
pub fn permutation_heads(c: &ModelConfig, gguf_name: &str) -> Option<usize> {
    if !c.arch.permutes_qk() {
        return None;
    }
    if gguf_name.ends_with("attn_q.weight") || gguf_name.ends_with("attn_q.bias") {
        Some(c.n_heads)
    } else if gguf_name.ends_with("attn_k.weight") || gguf_name.ends_with("attn_k.bias") {
        Some(c.n_kv_heads)
    } else {
        None
    }
}

/// Reorders the rows of a `rows × cols` matrix as llama.cpp's converter does for attn_q/attn_k
/// (`inverse = false`: HF → GGUF), or undoes it (`inverse = true`). Within each head of
/// `rows / n_head` rows, HF row `p·half + j` (p ∈ {0,1}) becomes GGUF row `2j + p`.
pub fn permute_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_head: usize,
    inverse: bool,
) -> Vec<f32> {
    assert_eq!(data.len(), rows * cols);
    assert_eq!(
        rows % (2 * n_head),
        0,
        "rows {rows} do not split into {n_head} heads of pairs"
    );
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for p in 0..2 {
            for j in 0..half {
                let hf_row = h * hd + p * half + j;
                let gg_row = h * hd + 2 * j + p;
                let (src, dst) = if inverse {
                    (gg_row, hf_row)
                } else {
                    (hf_row, gg_row)
                };
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (h, g) in [
            (
                "model.layers.12.self_attn.q_proj.weight",
                "blk.12.attn_q.weight",
            ),
            (
                "model.layers.0.mlp.down_proj.weight",
                "blk.0.ffn_down.weight",
            ),
            ("model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"),
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
        ] {
            assert_eq!(hf_to_gguf(h).as_deref(), Some(g));
            assert_eq!(gguf_to_hf(g).as_deref(), Some(h));
        }
        assert_eq!(hf_to_gguf("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(hf_to_gguf("model.layers.0.mlp.experts.weight"), None);
        assert_eq!(layer_of("blk.29.ffn_up.weight"), Some(29));
    }

    #[test]
    fn permutation_matches_llama_cpp_reshape_swapaxes() {
        // 2 heads of 4 rows, 1 column: HF rows [0..8) → per head [0,2,1,3]: numpy
        // w.reshape(2, 2, 2, 1).swapaxes(1, 2) gives rows 0,2,1,3, 4,6,5,7.
        let w: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let p = permute_rows(&w, 8, 1, 2, false);
        assert_eq!(p, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(permute_rows(&p, 8, 1, 2, true), w);
        let w: Vec<f32> = (0..64 * 3).map(|x| x as f32).collect();
        assert_eq!(
            permute_rows(&permute_rows(&w, 64, 3, 4, false), 64, 3, 4, true),
            w
        );
    }
}
