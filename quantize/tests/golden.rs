//! kiln's reference quantizers against vectors produced by ggml's own code
//! (`tests/data/ggml`, copied from the project's shared golden set; see its README.md).
//!
//! For every type and pattern: quantized bytes identical to ggml's with and without importance
//! weights, and dequantized values bit-identical.

use std::path::PathBuf;

use quantize::{dequantize, quantize, GgmlType};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ggml")
}

fn read(rel: &str) -> Vec<u8> {
    let p = data_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_f32(rel: &str) -> Vec<f32> {
    read(rel)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&read("manifest.json")).unwrap()
}

fn patterns() -> Vec<String> {
    manifest()["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

const WEIGHT_TYPES: [&str; 8] = [
    "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K",
];

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn check_bits(what: &str, ours: &[f32], theirs: &[f32]) -> Result<(), String> {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if a.to_bits() != b.to_bits() {
            return Err(format!("{what}: value {i}: kiln {a:e} vs ggml {b:e}"));
        }
    }
    Ok(())
}

/// ggml's `quantize_row_q8_K_ref` leaves `bsums` unwritten for an all-zero block (d = 0),
/// so the golden file holds whatever its buffer held there. Such sums never matter (they are
/// multiplied by d = 0); kiln writes zeros. Returns `want` with those undefined bytes replaced
/// by kiln's, after checking that kiln's are zero.
fn q8k_defined_bytes(want: &[u8], got: &[u8]) -> Vec<u8> {
    let mut w = want.to_vec();
    for (wb, gb) in w.chunks_exact_mut(292).zip(got.chunks_exact(292)) {
        if wb[..4] == [0, 0, 0, 0] {
            assert!(
                gb[260..].iter().all(|&b| b == 0),
                "kiln's bsums of a zero block must be zero"
            );
            wb[260..].copy_from_slice(&gb[260..]);
        }
    }
    w
}

#[test]
fn manifest_matches_type_table() {
    let m = manifest();
    for (name, info) in m["types"].as_object().unwrap() {
        let t: GgmlType = name.parse().unwrap();
        assert_eq!(
            t.id() as u64,
            info["ggml_type_id"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            t.block_size() as u64,
            info["block_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            t.type_size() as u64,
            info["type_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            t.row_size(4096).unwrap() as u64,
            info["row_bytes"].as_u64().unwrap(),
            "{name}"
        );
        if let Some(v) = info["vec_dot_type"].as_str().filter(|v| *v != "none") {
            assert_eq!(t.vec_dot_type().name(), v, "{name}");
        }
    }
}

#[test]
fn quantized_bytes_and_dequantized_values_match_ggml() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for ty_name in WEIGHT_TYPES.iter().chain(["q8_K"].iter()) {
        let ty: GgmlType = ty_name.parse().unwrap();
        for p in patterns() {
            let x = read_f32(&format!("inputs/{p}.f32"));
            let imatrix = read_f32(&format!("importance/{p}.f32"));
            let mut cases = vec![("", None)];
            if ty != GgmlType::Q8K {
                cases.push((".imatrix", Some(imatrix.as_slice())));
            }
            for (suffix, qw) in cases {
                let want = read(&format!("{ty_name}/{p}{suffix}.q"));
                let (got, _) = quantize(ty, &x, x.len(), qw).unwrap();
                checked += 1;
                let want = if ty == GgmlType::Q8K {
                    q8k_defined_bytes(&want, &got)
                } else {
                    want
                };
                if let Some(i) = first_diff(&got, &want) {
                    failures.push(format!(
                        "{ty_name}/{p}{suffix}: bytes differ from ggml's first at byte {i} (block {})",
                        i / ty.type_size()
                    ));
                }
                let deq = dequantize(ty, &want, x.len()).unwrap();
                let want_deq = read_f32(&format!("{ty_name}/{p}{suffix}.deq.f32"));
                if let Err(e) = check_bits(&format!("{ty_name}/{p}{suffix}.deq"), &deq, &want_deq) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(checked >= 8 * 8 * 2 + 8, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn activation_quantizers_match_ggml() {
    for (ty, dir) in [
        (GgmlType::Q8_0, "q8_0"),
        (GgmlType::Q8_1, "q8_1"),
        (GgmlType::Q8K, "q8_K"),
    ] {
        for p in ["gauss_outliers", "ramp"] {
            let x = read_f32(&format!("inputs/{p}.f32"));
            let want = read(&format!("{dir}/{p}.act.q"));
            let (got, _) = quantize(ty, &x, x.len(), None).unwrap();
            assert_eq!(first_diff(&got, &want), None, "{dir}/{p}.act.q");
            assert_eq!(got.len(), want.len());
        }
    }
}

#[test]
fn tiny_values_are_reported_as_degraded() {
    let x = read_f32("inputs/tiny.f32");
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        let (_, stats) = quantize(ty, &x, x.len(), None).unwrap();
        assert!(stats.degraded_blocks > 0, "{ty}: tiny input not reported");
    }
    let x = read_f32("inputs/gauss_outliers.f32");
    let (_, stats) = quantize(GgmlType::Q4K, &x, x.len(), None).unwrap();
    assert_eq!(stats.degraded_blocks, 0);
}
