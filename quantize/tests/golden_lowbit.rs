//! The low-bit tier (Q2_K, Q3_K, IQ4_NL, IQ4_XS) against vectors produced by ggml's own code
//! (`tests/data/ggml-lowbit`, inputs and importance weights from `tests/data/ggml`): quantized
//! bytes identical with and without importance weights for every pattern, dequantized values
//! bit-identical, and the f64 dot of the dequantized rows equal to ggml's.

use std::path::PathBuf;

use quantize::{dequantize, quantize, GgmlType};

fn read_in(dir: &str, rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(dir)
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&read_in("ggml-lowbit", "manifest.json")).unwrap()
}

const TYPES: [(&str, GgmlType); 4] = [
    ("q2_K", GgmlType::Q2K),
    ("q3_K", GgmlType::Q3K),
    ("iq4_nl", GgmlType::IQ4NL),
    ("iq4_xs", GgmlType::IQ4XS),
];

#[test]
fn the_type_table_matches_ggml() {
    let m = manifest();
    for (name, ty) in TYPES {
        let info = &m["types"][name];
        assert_eq!(ty.name(), name);
        assert_eq!(
            ty.id() as u64,
            info["ggml_type_id"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            ty.block_size() as u64,
            info["block_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            ty.type_size() as u64,
            info["type_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            ty.row_size(4096).unwrap() as u64,
            info["row_bytes"].as_u64().unwrap()
        );
        assert_eq!(
            ty.vec_dot_type().name(),
            info["vec_dot_type"].as_str().unwrap()
        );
    }
}

#[test]
fn low_bit_bytes_and_dequantized_values_match_ggml() {
    let m = manifest();
    let patterns: Vec<String> = m["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, ty) in TYPES {
        for p in &patterns {
            let x = f32s(&read_in("ggml", &format!("inputs/{p}.f32")));
            let qw = f32s(&read_in("ggml", &format!("importance/{p}.f32")));
            for (suffix, w) in [("", None), (".imatrix", Some(qw.as_slice()))] {
                let want = read_in("ggml-lowbit", &format!("{name}/{p}{suffix}.q"));
                let (got, _) = quantize(ty, &x, x.len(), w).unwrap();
                checked += 1;
                assert_eq!(got.len(), want.len(), "{name}/{p}{suffix}");
                if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                    failures.push(format!(
                        "{name}/{p}{suffix}: bytes differ from ggml's first at byte {i} (block {}, byte {} of it)",
                        i / ty.type_size(),
                        i % ty.type_size()
                    ));
                }
                let deq = dequantize(ty, &want, x.len()).unwrap();
                let want_deq = f32s(&read_in(
                    "ggml-lowbit",
                    &format!("{name}/{p}{suffix}.deq.f32"),
                ));
                if let Some(i) = deq
                    .iter()
                    .zip(&want_deq)
                    .position(|(a, b)| a.to_bits() != b.to_bits())
                {
                    failures.push(format!(
                        "{name}/{p}{suffix}.deq: value {i}: kiln {:e} vs ggml {:e}",
                        deq[i], want_deq[i]
                    ));
                }
            }
        }
    }
    assert_eq!(checked, 4 * patterns.len() * 2);
    assert!(patterns.len() >= 8);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The manifest's float64 dots of ggml's dequantized weight and activation rows, recomputed
/// from kiln's dequantized rows: the check that the golden rows and activations are read as ggml wrote them (kiln's
/// own dot kernels are checked against `ggml_vec_dot` in the kernels crate).
#[test]
fn f64_dots_of_the_dequantized_rows_match_the_manifest() {
    let m = manifest();
    for (name, ty) in TYPES {
        for d in m["types"][name]["dots"].as_array().unwrap() {
            let (w, a) = (
                d["weight"].as_str().unwrap(),
                d["activation"].as_str().unwrap(),
            );
            let x = f32s(&read_in("ggml-lowbit", &format!("{name}/{w}.deq.f32")));
            // The activation as ggml's dot sees it: quantized to the vec_dot type, dequantized.
            let vdt = ty.vec_dot_type();
            let aq = read_in("ggml", &format!("{}/{a}.act.q", vdt.name()));
            let act = dequantize(vdt, &aq, x.len()).unwrap();
            let q = read_in("ggml-lowbit", &format!("{name}/{w}.q"));
            let deq = dequantize(ty, &q, x.len()).unwrap();
            assert_eq!(deq.len(), act.len());
            let ours: f64 = deq
                .iter()
                .zip(&act)
                .map(|(&p, &q)| p as f64 * q as f64)
                .sum();
            let want = d["f64_dot_of_dequantized"].as_f64().unwrap();
            let mag: f64 = deq
                .iter()
                .zip(&act)
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                .sum();
            assert!(
                (ours - want).abs() <= 1e-9 * mag.max(1e-30),
                "{name} {w}·{a}: {ours} vs {want}"
            );
        }
    }
}
