//! How an HSM signing batch is split: by the cost of its signatures, so that each part
//! holds a session for about 10 ms (`HsmKeys::sign` in `hsm.rs`).

use crate::store::Algorithm;

/// About how long one signature takes, in microseconds (SoftHSM2 on one core of the CI
/// machine; a hardware HSM is slower, in the same order).
fn sign_cost_micros(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::EcP256 | Algorithm::Aes256 => 60,
        Algorithm::EcP384 => 250,
        Algorithm::Rsa2048 => 1_500,
        Algorithm::Rsa3072 => 4_500,
        Algorithm::Rsa4096 => 10_000,
    }
}

/// Most signing work one blocking task does before its session goes back to the gate.
const SIGN_TASK_BUDGET_MICROS: usize = 10_000;

/// How many digests of a batch one blocking task signs: about
/// [`SIGN_TASK_BUDGET_MICROS`] of work, and at least one.
pub(super) fn digests_per_task(algorithm: Algorithm) -> usize {
    (SIGN_TASK_BUDGET_MICROS / sign_cost_micros(algorithm)).max(1)
}

#[cfg(test)]
mod tests {
    use super::digests_per_task;
    use crate::store::Algorithm;

    #[test]
    fn batches_are_split_by_the_cost_of_their_signatures() {
        assert_eq!(digests_per_task(Algorithm::Rsa4096), 1);
        assert!(digests_per_task(Algorithm::Rsa2048) < digests_per_task(Algorithm::EcP384));
        assert!(digests_per_task(Algorithm::EcP256) >= 100);
    }
}
