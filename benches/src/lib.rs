//! Fixtures and a small timer shared by the benchmarks: each benchmark measures its figure and
//! the physical limit it is compared with in the same run, on the same machine.
#![allow(clippy::disallowed_methods)] // A benchmark's job is to read the clock.

use std::hint::black_box;
use std::time::Instant;

/// Median nanoseconds per call of `f`, over `rounds` rounds of `iters` calls each.
pub fn ns_per_call(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
                black_box(());
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// One row of the results table: what was measured, its figure, the limit, and their ratio.
pub fn report(name: &str, figure: &str, limit: &str, ratio: f64, goal: &str) {
    println!("RESULT | {name} | {figure} | {limit} | {ratio:.3} | {goal}");
}
