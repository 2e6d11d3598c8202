//! Concurrent callers of a running broker: tokio tasks that repeat one call until told to
//! stop, counting completed operations and each call's latency.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::cpu::{CpuClock, cpu_us_per_op};
use super::table::Row;

/// The warm-up run before each measured row.
pub const WARM_UP: Duration = Duration::from_millis(300);

/// What one caller repeats: one call (or one flow of calls); resolves to the operations it
/// completed (1, or a batch's size). Panics on any unexpected answer.
pub trait Call: Send + 'static {
    fn call(&mut self) -> impl Future<Output = u64> + Send;
}

/// What one caller task measured.
struct CallerResult {
    ops: u64,
    latency_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// Repeats `call` until `stop`; counts operations and call latency.
async fn caller<C: Call>(mut call: C, stop: Arc<AtomicBool>) -> CallerResult {
    let mut latency_us = histogram();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        ops += call.call().await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency_us.saturating_record(micros.max(1));
    }
    CallerResult { ops, latency_us }
}

/// Runs `callers` tasks for `duration`, spread over `min(callers, channels.len())` of
/// `channels`; `make` turns a channel into a caller. Returns operations, elapsed seconds
/// and latencies.
pub async fn run_callers<T: Clone, C: Call>(
    channels: &[T],
    make: &impl Fn(T) -> C,
    callers: usize,
    duration: Duration,
) -> (u64, f64, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let used = callers.min(channels.len());
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|i| tokio::spawn(caller(make(channels[i % used].clone()), stop.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    let mut latency = histogram();
    for task in tasks {
        let result = task.await.unwrap();
        ops += result.ops;
        latency.add(&result.latency_us).unwrap();
    }
    (ops, start.elapsed().as_secs_f64(), latency)
}

/// A row named `name`: [`WARM_UP`], then `callers` callers for `seconds`, with the CPU
/// that the broker (`broker_pid`) and this process spent per operation.
pub async fn broker_row<T: Clone, C: Call>(
    name: &'static str,
    channels: &[T],
    make: &impl Fn(T) -> C,
    callers: usize,
    seconds: f64,
    clock: &CpuClock,
    broker_pid: u32,
) -> Row {
    run_callers(channels, make, callers, WARM_UP).await;
    let me = std::process::id();
    let (broker_cpu, bench_cpu) = (clock.seconds(broker_pid), clock.seconds(me));
    let (ops, elapsed, latency) =
        run_callers(channels, make, callers, Duration::from_secs_f64(seconds)).await;
    Row {
        name,
        callers,
        ops_per_second: ops as f64 / elapsed,
        latency: Some((
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
        )),
        broker_cpu_us: Some(cpu_us_per_op(broker_cpu, clock.seconds(broker_pid), ops)),
        bench_cpu_us: cpu_us_per_op(bench_cpu, clock.seconds(me), ops),
    }
}
