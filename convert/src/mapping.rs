//! Hugging Face ↔ llama.cpp tensor names, expected shapes, and the Q/K row permutation.
//!
//! The names and transforms of each architecture are tables in its module under
//! [`crate::arch`]; these are the lookups over them. The permutation is `LlamaModel.permute` of
//! `convert_hf_to_gguf.py`: within each head, the rows of the two RoPE halves are interleaved
//! so that llama.cpp's adjacent-pair RoPE equals HF's rotate-half RoPE.

use crate::arch::Transform;
use crate::config::ModelConfig;

/// HF tensors that carry no weights (recomputed by every runtime); listed, then skipped.
pub fn is_ignorable(hf: &str) -> bool {
    hf.ends_with("rotary_emb.inv_freq") || hf.ends_with(".masked_bias") || hf.ends_with("attn.bias")
}

/// The GGUF name of an HF tensor of `c`'s model.
pub fn hf_to_gguf(c: &ModelConfig, hf: &str) -> Option<String> {
    c.arch
        .family()
        .tensors(c)
        .into_iter()
        .find(|t| t.hf == hf)
        .map(|t| t.gguf)
}

/// The HF name of a GGUF tensor of `c`'s model.
pub fn gguf_to_hf(c: &ModelConfig, g: &str) -> Option<String> {
    crate::arch::hf_name(c, g)
}

/// The layer index of a GGUF tensor name (`blk.N.…`).
pub fn layer_of(g: &str) -> Option<usize> {
    g.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
}

/// Every GGUF tensor the model has, in the order kiln writes them, with its HF shape
/// (outermost first).
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    c.arch
        .family()
        .tensors(c)
        .into_iter()
        .map(|t| (t.gguf, t.shape))
        .collect()
}

/// How many heads the Q/K permutation of `gguf_name` uses, if it applies.
pub fn permutation_heads(c: &ModelConfig, gguf_name: &str) -> Option<usize> {
    match crate::arch::transform_of(c, gguf_name) {
        Transform::Permute(h) => Some(h),
        _ => None,
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
    use crate::arch::Arch;

    #[test]
    fn names_round_trip() {
        let mut c = ModelConfig::base(Arch::Llama, 64, 128, 16, 4, 2, 16, 100);
        c.qkv_bias = true;
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
            (
                "model.layers.3.post_attention_layernorm.weight",
                "blk.3.ffn_norm.weight",
            ),
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
        ] {
            assert_eq!(hf_to_gguf(&c, h).as_deref(), Some(g));
            assert_eq!(gguf_to_hf(&c, g).as_deref(), Some(h));
        }
        assert_eq!(hf_to_gguf(&c, "model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(hf_to_gguf(&c, "model.layers.0.mlp.experts.weight"), None);
        assert_eq!(layer_of("blk.29.ffn_up.weight"), Some(29));
        assert_eq!(permutation_heads(&c, "blk.1.attn_k.weight"), Some(2));
        // Gemma 3: the same HF name is another tensor, and norms are stored as 1 + w.
        let mut g = ModelConfig::base(Arch::Gemma3, 64, 128, 2, 4, 1, 16, 100);
        g.tie_word_embeddings = true;
        assert_eq!(
            hf_to_gguf(&g, "model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blk.1.post_attention_norm.weight")
        );
        assert_eq!(
            hf_to_gguf(&g, "model.layers.1.pre_feedforward_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(permutation_heads(&g, "blk.1.attn_q.weight"), None);
        assert_eq!(
            crate::arch::transform_of(&g, "blk.0.attn_q_norm.weight"),
            Transform::PlusOne
        );
        assert_eq!(hf_to_gguf(&g, "lm_head.weight"), None);
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
