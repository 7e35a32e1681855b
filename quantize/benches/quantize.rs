//! Quantization throughput per type, in MB/s of f32 input, on one thread and on all threads.
//!
//! `cargo bench -p quantize` — criterion reports the throughput as bytes/s of input.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantize::{quantize, GgmlType};

const TYPES: [GgmlType; 11] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

fn input(rows: usize, n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..rows * n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (rows, n) = (64, 4096);
    let x = input(rows, n);
    let qw: Vec<f32> = (0..n).map(|i| 0.1 + (i % 17) as f32 * 0.05).collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for (label, nthreads) in [("1-thread", 1), ("all-threads", threads)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(nthreads)
            .build()
            .unwrap();
        let mut g = c.benchmark_group(format!("quantize/{label}"));
        g.throughput(Throughput::Bytes((x.len() * 4) as u64));
        g.sample_size(10);
        for ty in TYPES {
            g.bench_function(BenchmarkId::new("plain", ty.name()), |b| {
                b.iter(|| pool.install(|| quantize(ty, &x, n, None).unwrap()))
            });
            if matches!(
                ty,
                GgmlType::Q4_0
                    | GgmlType::Q4_1
                    | GgmlType::Q5_0
                    | GgmlType::Q5_1
                    | GgmlType::Q4K
                    | GgmlType::Q5K
                    | GgmlType::Q6K
            ) {
                g.bench_function(BenchmarkId::new("imatrix", ty.name()), |b| {
                    b.iter(|| pool.install(|| quantize(ty, &x, n, Some(&qw)).unwrap()))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
