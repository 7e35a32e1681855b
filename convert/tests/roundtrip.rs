//! Synthetic checkpoints through convert and export, and the GGUF writer/reader on every value
//! type. (The real-model checks are in the workspace's `tests/fixture.rs`.)

use std::path::Path;

use convert::config::Arch;
use convert::convert::{convert, export, ConvertOptions};
use convert::gguf::{GgufFile, GgufWriter, Metadata, TensorSpec, Value, ValueType};
use convert::mapping::gguf_to_hf;
use convert::safetensors::{Dtype, SafetensorsFile};
use convert::testing::{hf_tensors, tensor_values, write_checkpoint, TinySpec};
use convert::{GgmlType, ModelSource};

fn opts(ty: GgmlType) -> ConvertOptions {
    ConvertOptions {
        out_type: ty,
        tokenizer_pre: Some("gpt-2".into()),
        ..Default::default()
    }
}

/// The checkpoint's values of an HF tensor, as the file stores them (rounded to its dtype).
fn stored(spec: &TinySpec, name: &str) -> Vec<f32> {
    let names = hf_tensors(spec);
    let i = names.iter().position(|(n, _)| n == name).unwrap();
    let v = tensor_values(spec, name, &names[i].1, i);
    match spec.dtype {
        Dtype::F32 => v,
        Dtype::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        Dtype::BF16 => v
            .iter()
            .map(|&x| quantize::float::f32_to_bf16(x).to_f32())
            .collect(),
    }
}

#[test]
fn every_metadata_type_and_alignment_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let mut md = Metadata::new();
    md.set("general.alignment", Value::U32(64));
    md.set("a.u8", Value::U8(200));
    md.set("a.i8", Value::I8(-100));
    md.set("a.u16", Value::U16(60000));
    md.set("a.i16", Value::I16(-30000));
    md.set("a.u32", Value::U32(4_000_000_000));
    md.set("a.i32", Value::I32(-2_000_000_000));
    md.set("a.f32", Value::F32(1.5e-7));
    md.set("a.bool", Value::Bool(true));
    md.set("a.string", Value::String("héllo ✓".into()));
    md.set("a.u64", Value::U64(u64::MAX));
    md.set("a.i64", Value::I64(i64::MIN));
    md.set("a.f64", Value::F64(-2.5e300));
    md.set(
        "a.arr_i32",
        Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-2)]),
    );
    md.set(
        "a.arr_str",
        Value::string_array(["x".to_string(), "".to_string()]),
    );
    md.set(
        "a.nested",
        Value::Array(
            ValueType::Array,
            vec![
                Value::Array(ValueType::U8, vec![Value::U8(1)]),
                Value::Array(ValueType::U8, vec![]),
            ],
        ),
    );
    let tensors = vec![
        TensorSpec {
            name: "a".into(),
            dims: vec![3],
            ty: GgmlType::F32,
        },
        TensorSpec {
            name: "b".into(),
            dims: vec![32, 2],
            ty: GgmlType::Q8_0,
        },
        TensorSpec {
            name: "c".into(),
            dims: vec![5, 1],
            ty: GgmlType::F16,
        },
    ];
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| (0..t.size().unwrap()).map(|i| i as u8).collect())
        .collect();
    let w = GgufWriter::new(&path, md.clone(), tensors.clone()).unwrap();
    let mut f = std::fs::File::create(&path).unwrap();
    w.write(&path, &mut f, |i| Ok(data[i].clone())).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), w.file_size());
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.metadata, md);
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_offset % 64, 0);
    for (t, d) in g.tensors.iter().zip(&data) {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
        assert_eq!(g.tensor_data(t), &d[..]);
    }
    assert_eq!(
        g.tensors.iter().map(|t| t.dims.clone()).collect::<Vec<_>>(),
        tensors.iter().map(|t| t.dims.clone()).collect::<Vec<_>>()
    );
}

fn check_roundtrip(spec: &TinySpec) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    write_checkpoint(&ckpt, spec).unwrap();
    let src = ModelSource::open(&ckpt).unwrap();
    let gguf = dir.path().join("m.gguf");
    convert(&src, &gguf, &opts(GgmlType::F32)).unwrap();
    let g = GgufFile::open(&gguf).unwrap();
    let cfg = src.config();
    // Every GGUF tensor equals the checkpoint's, permuted where llama.cpp permutes, 1 + w
    // where the architecture stores norms that way.
    for t in &g.tensors {
        let hf = gguf_to_hf(cfg, &t.name).unwrap();
        let want = convert::arch::transform_of(cfg, &t.name).to_gguf(
            stored(spec, &hf),
            t.n_rows(),
            t.row_len(),
        );
        assert_eq!(g.tensor_f32(t).unwrap(), want, "{}", t.name);
    }
    assert_eq!(g.tensor("output.weight").is_none(), spec.tie_embeddings);
    assert_eq!(g.architecture(), Some(spec.arch.gguf_arch()));
    // Export gives back the checkpoint's tensors bit for bit (as f32).
    let back = dir.path().join("back");
    export(&ModelSource::open(&gguf).unwrap(), &back).unwrap();
    let st = SafetensorsFile::open(back.join("model.safetensors")).unwrap();
    assert_eq!(st.tensors.len(), hf_tensors(spec).len());
    for t in &st.tensors {
        let mut v = vec![0f32; t.numel()];
        convert::safetensors::to_f32(t.dtype, st.data(t), &mut v);
        assert_eq!(v, stored(spec, &t.name), "{}", t.name);
    }
    // The reference safetensors reader accepts kiln's file.
    let bytes = std::fs::read(back.join("model.safetensors")).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(reference.len(), st.tensors.len());
    // Hyper-parameters and tokenizer survive: the exported directory converts to the same
    // metadata (but the name, which is the directory's).
    let again = dir.path().join("again.gguf");
    convert(
        &ModelSource::open(&back).unwrap(),
        &again,
        &opts(GgmlType::F32),
    )
    .unwrap();
    let g2 = GgufFile::open(&again).unwrap();
    for (k, v) in g.metadata.iter().filter(|(k, _)| *k != "general.name") {
        assert_eq!(g2.metadata.get(k), Some(v), "{k}");
    }
    assert_eq!(g2.tensors, g.tensors);
}

#[test]
fn llama_f32_single_file() {
    check_roundtrip(&TinySpec::default());
}

#[test]
fn llama_bf16_sharded_tied() {
    check_roundtrip(&TinySpec {
        dtype: Dtype::BF16,
        shards: 3,
        tie_embeddings: true,
        ..Default::default()
    });
}

#[test]
fn mistral_f16() {
    check_roundtrip(&TinySpec {
        arch: Arch::Mistral,
        dtype: Dtype::F16,
        heads: 8,
        kv_heads: 8,
        ..Default::default()
    });
}

#[test]
fn qwen2_with_biases_is_not_permuted() {
    let spec = TinySpec {
        arch: Arch::Qwen2,
        shards: 2,
        ..Default::default()
    };
    check_roundtrip(&spec);
}

/// The Llama-2-style SentencePiece tokenizer of the checked-in test data.
fn spm_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/llama2-spm")
}

#[test]
fn gemma3_norms_round_trip_as_one_plus_w_with_a_sentencepiece_tokenizer() {
    let spec = TinySpec {
        arch: Arch::Gemma3,
        layers: 7,
        heads: 4,
        kv_heads: 1,
        vocab: 4000,
        tie_embeddings: true,
        tokenizer_dir: Some(spm_dir()),
        sliding_window: Some(16),
        ..Default::default()
    };
    check_roundtrip(&spec);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(&dir.path().join("c"), &spec).unwrap();
    let src = ModelSource::open(dir.path().join("c")).unwrap();
    let c = src.config();
    assert_eq!(c.sliding_window, Some(16));
    assert_eq!(
        c.swa_layers,
        vec![true, true, true, true, true, false, true]
    );
    let md = src.base_metadata(None).unwrap();
    assert_eq!(md.str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(
        md.get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool()),
        Some(false)
    );
    assert_eq!(md.u64("gemma3.attention.sliding_window"), Some(16));
    assert_eq!(md.f64("gemma3.rope.freq_base_swa"), Some(10000.0));
    // llama.cpp's default pattern (every sixth layer global): no pattern key.
    assert!(md.get("gemma3.attention.sliding_window_pattern").is_none());
}

#[test]
fn output_types_follow_the_rules_and_bytes_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    // intermediate 96: ffn_down rows of 96 are fine for q8_0 (multiple of 32).
    write_checkpoint(
        &ckpt,
        &TinySpec {
            intermediate: 96,
            ..Default::default()
        },
    )
    .unwrap();
    let src = ModelSource::open(&ckpt).unwrap();
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
        let a = dir.path().join(format!("a-{ty}.gguf"));
        let b = dir.path().join(format!("b-{ty}.gguf"));
        convert(&src, &a, &opts(ty)).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| convert(&src, &b, &opts(ty))).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{ty}: bytes depend on threads"
        );
        let g = GgufFile::open(&a).unwrap();
        for t in &g.tensors {
            let want = if t.dims.len() == 1 { GgmlType::F32 } else { ty };
            assert_eq!(t.ty, want, "{}", t.name);
        }
        assert_eq!(
            g.metadata.u64("general.file_type"),
            Some(convert::convert::file_type_id(ty) as u64)
        );
    }
}

#[test]
fn unknown_tokenizer_stops_and_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    write_checkpoint(&ckpt, &TinySpec::default()).unwrap();
    let src = ModelSource::open(&ckpt).unwrap();
    let out = dir.path().join("x.gguf");
    let e = convert(
        &src,
        &out,
        &ConvertOptions {
            out_type: GgmlType::F32,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("--tokenizer-pre"), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    assert!(!out.exists());
    assert_no_temp(dir.path());
}

#[test]
fn non_finite_weights_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let spec = TinySpec::default();
    write_checkpoint(&ckpt, &spec).unwrap();
    // Poison one value of blk.1's ffn_up (HF mlp.up_proj) in place.
    let path = ckpt.join("model.safetensors");
    let st = SafetensorsFile::open(&path).unwrap();
    let t = st
        .tensor("model.layers.1.mlp.up_proj.weight")
        .unwrap()
        .clone();
    drop(st);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[t.start + 4 * 77..t.start + 4 * 78].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let src = ModelSource::open(&ckpt).unwrap();
    let out = dir.path().join("x.gguf");
    let e = convert(&src, &out, &opts(GgmlType::F16))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blk.1.ffn_up.weight") && e.contains("index 77"),
        "{e}"
    );
    assert!(!out.exists());
    let ok = ConvertOptions {
        allow_nonfinite: true,
        ..opts(GgmlType::F16)
    };
    convert(&src, &out, &ok).unwrap();
}

fn assert_no_temp(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            !n.ends_with(convert::atomic::TMP_SUFFIX),
            "temporary file left: {n}"
        );
    }
}
