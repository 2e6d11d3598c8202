//! When to run the flow again: renewal halfway through a credential's life, and backoff
//! after a failure. Both jittered so that a fleet started together does not stay in step.
//! Pure functions: the caller draws the random sample.

use std::time::{Duration, SystemTime};

/// The jitter: ±10 % of the delay.
const JITTER: f64 = 0.1;
/// The first retry after a failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How long to wait, from `now`, before renewing a credential valid from `issued_at` to
/// `expires_at`: until halfway through its lifetime, ±10 % (`jitter` is a uniform sample
/// from [0, 1]; 0.5 means none). Zero once halfway has passed, or for an empty lifetime.
pub fn renewal_delay(
    issued_at: SystemTime,
    expires_at: SystemTime,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let lifetime = match expires_at.duration_since(issued_at) {
        Ok(lifetime) if !lifetime.is_zero() => lifetime,
        _ => return Duration::ZERO,
    };
    let halfway = issued_at.checked_add(lifetime / 2).unwrap_or(expires_at);
    jittered(halfway.duration_since(now).unwrap_or_default(), jitter)
}

/// How long to wait before retry number `attempt` (1 after the first failure): 1 s,
/// doubling, at most 60 s; ±10 % (`jitter` as for [`renewal_delay`]), never past 60 s.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(6);
    let base = BACKOFF_FIRST
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(BACKOFF_MAX);
    jittered(base, jitter).min(BACKOFF_MAX)
}

/// `base` scaled by a factor in [1 − JITTER, 1 + JITTER] chosen by `sample`.
fn jittered(base: Duration, sample: f64) -> Duration {
    let sample = if sample.is_finite() {
        sample.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 - JITTER + 2.0 * JITTER * sample;
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        T0 + Duration::from_secs(seconds)
    }

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn renewal_is_halfway_through_the_lifetime_within_ten_percent() {
        // Issued at 1000, valid for an hour: halfway is 2800.
        let (issued, expires) = (at(1000), at(4600));
        assert_eq!(
            renewal_delay(issued, expires, issued, 0.5),
            Duration::from_secs(1800)
        );
        assert!((secs(renewal_delay(issued, expires, issued, 0.0)) - 1620.0).abs() < 1e-6);
        assert!((secs(renewal_delay(issued, expires, issued, 1.0)) - 1980.0).abs() < 1e-6);
        // Later on, what is left until halfway.
        assert_eq!(
            renewal_delay(issued, expires, at(2000), 0.5),
            Duration::from_secs(800)
        );
        // Past halfway, or expired, or nonsense: now.
        assert_eq!(
            renewal_delay(issued, expires, at(3000), 1.0),
            Duration::ZERO
        );
        assert_eq!(
            renewal_delay(issued, expires, at(9000), 0.5),
            Duration::ZERO
        );
        assert_eq!(renewal_delay(expires, issued, issued, 0.5), Duration::ZERO);
    }

    #[test]
    fn renewal_never_reaches_expiry_whatever_the_sample() {
        let (issued, expires) = (at(0), at(300));
        for sample in [-5.0, 0.0, 0.3, 0.999, 1.0, 7.0, f64::NAN, f64::INFINITY] {
            let delay = renewal_delay(issued, expires, issued, sample);
            assert!(
                secs(delay) >= 135.0 && secs(delay) <= 165.0,
                "{sample}: {delay:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_sixty() {
        let middle: Vec<u64> = (1..=9).map(|n| backoff(n, 0.5).as_secs()).collect();
        assert_eq!(middle, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(0, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(60));
        assert!((secs(backoff(3, 0.0)) - 3.6).abs() < 1e-6);
        assert!((secs(backoff(3, 1.0)) - 4.4).abs() < 1e-6);
        assert!((secs(backoff(7, 0.0)) - 54.0).abs() < 1e-6);
    }
}
