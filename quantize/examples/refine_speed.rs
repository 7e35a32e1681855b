//! Throughput of `--method search`'s block refinement against ggml's reference quantizers
//! (one thread: `RAYON_NUM_THREADS=1 cargo run --release -p quantize --example refine_speed`).
fn main() {
    let n = 576;
    let rows = 1536;
    let mut s = 12345u64;
    let x: Vec<f32> = (0..n * rows)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32).collect();
    for ty in [
        quantize::GgmlType::Q4_0,
        quantize::GgmlType::Q4_1,
        quantize::GgmlType::Q5_0,
        quantize::GgmlType::Q5_1,
        quantize::GgmlType::Q8_0,
    ] {
        let t0 = std::time::Instant::now();
        let (mut b, _) = quantize::quantize(ty, &x, n, Some(&w)).unwrap();
        let t1 = t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        quantize::refine::refine(ty, &mut b, &x, n, Some(&w));
        let t2 = t0.elapsed().as_secs_f64();
        println!(
            "{ty}: ggml {:.1} MB/s, refine {:.1} MB/s",
            (x.len() * 4) as f64 / t1 / 1e6,
            (x.len() * 4) as f64 / t2 / 1e6
        );
    }
}
