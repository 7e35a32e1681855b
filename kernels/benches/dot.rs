//! Dot-product throughput in GB/s of weight bytes, scalar vs AVX2, for every weight type.
//!
//! `cargo bench -p kernels --bench dot`. The row set (4096 × 64 values) is sized to stay in L2
//! so the numbers measure the kernels, not memory.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::dot::{self, scalar};
use kernels::simd;
use quantize::{blocks_from_bytes as v, quantize, GgmlType};

mod common;
use common::values;

fn bench(c: &mut Criterion) {
    let n = 4096;
    let rows = 64;
    let w = values(n * rows, 1, 0.1);
    let x = values(n, 2, 2.0);
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    let mut g = c.benchmark_group("dot");
    g.sample_size(20);
    for ty in types {
        let (wq, _) = quantize(ty, &w, n, None).unwrap();
        let a = dot::quantize_activation(ty, &x);
        let rb = ty.row_size(n).unwrap();
        g.throughput(Throughput::Bytes(wq.len() as u64));
        let mut levels = vec![("scalar", true)];
        if simd::available() >= simd::SimdLevel::Avx2 {
            levels.push((simd::available().name(), false));
        }
        for (label, force) in levels {
            g.bench_function(BenchmarkId::new(label, ty.name()), |b| {
                b.iter(|| {
                    let mut s = 0f32;
                    for r in wq.chunks_exact(rb) {
                        s += if force {
                            scalar_dot(ty, r, &a)
                        } else {
                            dot::vec_dot(ty, n, r, &a).unwrap()
                        };
                    }
                    s
                })
            });
        }
    }
    g.finish();
}

fn scalar_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    let f = |b: &[u8]| bytemuck::cast_slice::<u8, f32>(b).to_vec();
    match ty {
        GgmlType::F32 => scalar::vec_dot_f32(&f(w), &f(a)),
        GgmlType::F16 => scalar::vec_dot_f16_f32(&v(w), &f(a)),
        GgmlType::Q4_0 => scalar::vec_dot_q4_0_q8_0(&v(w), &v(a)),
        GgmlType::Q4_1 => scalar::vec_dot_q4_1_q8_1(&v(w), &v(a)),
        GgmlType::Q5_0 => scalar::vec_dot_q5_0_q8_0(&v(w), &v(a)),
        GgmlType::Q5_1 => scalar::vec_dot_q5_1_q8_1(&v(w), &v(a)),
        GgmlType::Q8_0 => scalar::vec_dot_q8_0_q8_0(&v(w), &v(a)),
        GgmlType::Q4K => scalar::vec_dot_q4_k_q8_k(&v(w), &v(a)),
        GgmlType::Q5K => scalar::vec_dot_q5_k_q8_k(&v(w), &v(a)),
        GgmlType::Q6K => scalar::vec_dot_q6_k_q8_k(&v(w), &v(a)),
        _ => unreachable!(),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
