//! Pure helpers for the soak harnesses (`make soak`, `make soak-memory`): knobs read from
//! the environment, a seeded random source whose seed is printed so a run can be
//! repeated, summaries of start-up times, and resident-memory samples with their slope.
//! The harnesses themselves are `softhsm-tests/benches/soak.rs` and
//! `softhsm-tests/benches/soak_memory.rs`; docs/performance.md says how to run them.

use std::time::Duration;

/// A positive number from the environment variable `name`, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n: &u64| *n > 0)
        .unwrap_or(default)
}

/// `SOAK_SEED` if set, else one drawn from the clock; the harness prints it.
pub fn seed() -> u64 {
    std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A seeded, non-cryptographic random source (for kill moments and operation mixes).
pub fn rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed)
}

/// Minimum, median, 95th percentile and maximum of some durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub min: Duration,
    pub median: Duration,
    pub p95: Duration,
    pub max: Duration,
}

/// The [`Spread`] of `samples` (nearest-rank percentiles); `None` when there are none.
pub fn spread(samples: &[Duration]) -> Option<Spread> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
    };
    Some(Spread {
        min: *sorted.first()?,
        median: at(0.5)?,
        p95: at(0.95)?,
        max: *sorted.last()?,
    })
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The resident set of process `pid` in KiB, or `None` once it has gone.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&status)
}

/// The least-squares slope of `(seconds, value)` points, in value units per second;
/// `None` with fewer than two distinct times.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(sxy / sxx)
}

/// Formats a duration in milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = spread(&samples).unwrap();
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.median, Duration::from_millis(50));
        assert_eq!(s.p95, Duration::from_millis(95));
        assert_eq!(s.max, Duration::from_millis(100));
        let one = spread(&[Duration::from_millis(7)]).unwrap();
        assert_eq!(
            (one.min, one.p95, one.max),
            (one.median, one.median, one.median)
        );
        assert!(spread(&[]).is_none());
    }

    #[test]
    fn vm_rss_is_read_from_proc_status_text() {
        let status = "Name:\tkeybroker\nVmPeak:\t  99 kB\nVmRSS:\t   43120 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(status), Some(43_120));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(vm_rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn slope_of_a_line_and_of_too_few_points() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|x| (f64::from(x), 3.0 + 2.0 * f64::from(x)))
            .collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|x| (f64::from(x), 5.0)).collect();
        assert_eq!(slope(&flat), Some(0.0));
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let (mut a, mut b) = (rng(42), rng(42));
        let draws = |r: &mut fastrand::Rng| (0..8).map(|_| r.u64(..)).collect::<Vec<_>>();
        assert_eq!(draws(&mut a), draws(&mut b));
    }

    #[test]
    fn env_numbers_fall_back_on_absent_or_zero() {
        assert_eq!(env_number("SOAK_TEST_SURELY_UNSET_VARIABLE", 100), 100);
    }
}
