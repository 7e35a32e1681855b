//! Matmul throughput per weight type on SmolLM2's shapes (576 → 1536, 1536 → 576 and the
//! 49,152-row output projection), 512 tokens, in GMAC/s (weights × tokens per second), at the
//! SIMD level in use; one thread unless `KILN_BENCH_THREADS` says otherwise;
//! `KILN_BENCH_TOKENS=1` measures the decode path instead. A benchmark, not a test: speed
//! figures come from here and `kiln bench`, never from timed tests.
//!
//! `cargo bench -p kernels --bench matmul [-- FILTER]`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::matmul::{matmul, MatmulScratch};
use kernels::{MatmulMode, Weight};
use quantize::{quantize, GgmlType};

mod common;
use common::values;

fn bench(c: &mut Criterion) {
    let threads = std::env::var("KILN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    // KILN_BENCH_TOKENS=1 measures the decode path (one token) instead of a 512-token prefill.
    let n_tok = std::env::var("KILN_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::IQ4NL,
        GgmlType::Q4K,
        GgmlType::Q3K,
        GgmlType::IQ4XS,
    ];
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    for (rows, cols) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
        let x = values(n_tok * cols, 2, 2.0);
        let mut out = vec![0f32; n_tok * rows];
        for ty in types {
            let Ok((wq, _)) = quantize(ty, &values(rows * cols, 1, 0.1), cols, None) else {
                continue; // a K-quant on rows that are not whole super-blocks
            };
            let w = Weight::new("w", ty, rows, cols, Arc::new(wq), 0).unwrap();
            let mut scratch = MatmulScratch::default();
            g.throughput(Throughput::Elements((rows * cols * n_tok) as u64));
            let id = BenchmarkId::new(format!("{rows}x{cols}"), ty.name());
            g.bench_function(id, |b| {
                b.iter(|| {
                    matmul(&w, &x, n_tok, &mut out, &mut scratch, MatmulMode::Quantized);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
