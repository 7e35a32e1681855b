//! Property tests: any row — NaN and ±Inf included — quantizes or fails cleanly, never panics;
//! a non-finite value is an error naming its row and column; shapes are checked; and the bytes
//! do not depend on the number of threads.

use proptest::prelude::*;
use quantize::{dequantize, quantize, GgmlType, QuantError};

const STORAGE: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

fn any_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -2.0f32..2.0,
        2 => -40000.0f32..40000.0,
        1 => -1e-7f32..1e-7,
        1 => Just(0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => any::<f32>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn rows_never_panic_and_non_finite_is_named(
        rows in 1usize..4,
        values in proptest::collection::vec(any_value(), 512 * 3),
        weighted in any::<bool>(),
        ty_idx in 0usize..STORAGE.len(),
    ) {
        let ty = STORAGE[ty_idx];
        let n = 512;
        let x = &values[..rows * n];
        let qw: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1).collect();
        let res = quantize(ty, x, n, weighted.then_some(qw.as_slice()));
        let first_bad = x.iter().position(|v| !v.is_finite());
        match (res, first_bad) {
            (Ok((bytes, stats)), None) => {
                prop_assert_eq!(bytes.len(), ty.row_size(n).unwrap() * rows);
                prop_assert_eq!(stats.rows, rows);
                let back = dequantize(ty, &bytes, x.len()).unwrap();
                prop_assert_eq!(back.len(), x.len());
            }
            (Err(QuantError::NonFinite { row, column, value }), Some(i)) => {
                prop_assert_eq!((row, column), (i / n, i % n));
                prop_assert!(!value.is_finite());
            }
            (other, bad) => prop_assert!(false, "unexpected {:?} for first non-finite {:?}", other.map(|r| r.1), bad),
        }
    }

    #[test]
    fn misfit_row_lengths_are_errors(n in 1usize..600, ty_idx in 3usize..STORAGE.len()) {
        let ty = STORAGE[ty_idx];
        let x = vec![0.5f32; n];
        let r = quantize(ty, &x, n, None);
        if n % ty.block_size() == 0 {
            prop_assert!(r.is_ok());
        } else {
            let is_row_length = matches!(r, Err(QuantError::RowLength { .. }));
            prop_assert!(is_row_length);
        }
    }
}

#[test]
fn error_messages_name_the_row() {
    let mut x = vec![0.1f32; 256 * 4];
    x[2 * 256 + 17] = f32::NAN;
    let e = quantize(GgmlType::Q4K, &x, 256, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "row 2, column 17: non-finite value NaN cannot be quantized"
    );
    let e = quantize(GgmlType::Q4K, &x[..576], 576, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a multiple of q4_K's block size 256"),
        "{e}"
    );
    let e = quantize(GgmlType::Q8_0, &x[..64], 64, Some(&[1.0; 63])).unwrap_err();
    assert!(matches!(
        e,
        QuantError::ImatrixLength {
            got: 63,
            expected: 64
        }
    ));
    let mut qw = vec![1.0f32; 64];
    qw[5] = -1.0;
    let e = quantize(GgmlType::Q4_0, &x[..64], 64, Some(&qw)).unwrap_err();
    assert!(matches!(e, QuantError::BadImatrix { column: 5, .. }));
}

#[test]
fn bytes_do_not_depend_on_thread_count() {
    // 64 rows of 1024 with varied magnitudes; importance weights on and off.
    let n = 1024;
    let x: Vec<f32> = (0..64 * n)
        .map(|i| ((i as f32 * 0.7231).sin() * (1.0 + (i % 97) as f32)).powi(3) * 1e-3)
        .collect();
    let qw: Vec<f32> = (0..n)
        .map(|i| 0.5 + (i as f32 * 0.01).cos().abs())
        .collect();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for ty in STORAGE {
        for w in [None, Some(qw.as_slice())] {
            let a = one.install(|| quantize(ty, &x, n, w)).unwrap();
            let b = many.install(|| quantize(ty, &x, n, w)).unwrap();
            assert_eq!(a, b, "{ty}");
        }
    }
}
