//! The loop `make bench` uses: run an operation from N threads for a fixed time and
//! count completions. Shared by every crate's benchmark so their figures compare.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One benchmark row's operation.
pub type Operation<'a> = Box<dyn Fn() + Sync + 'a>;

/// Seconds per measurement: `BENCH_SECONDS`, or 3.
pub fn seconds_per_row() -> f64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(3.0)
}

/// Runs `op` from `threads` threads for `seconds`, after a 300 ms warm-up; returns ops/s.
pub fn ops_per_second(op: &(dyn Fn() + Sync), threads: usize, seconds: f64) -> f64 {
    let run = |duration: Duration| {
        let stop = AtomicBool::new(false);
        let count = AtomicU64::new(0);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op();
                        n += 1;
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                });
            }
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
        });
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    };
    run(Duration::from_millis(300));
    run(Duration::from_secs_f64(seconds))
}
