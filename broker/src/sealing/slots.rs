//! Bounds on sealing streams in flight. The request layer's per-identity bound
//! (`server.max_calls_per_identity`) holds a call only until its response starts, and a
//! stream's work goes on after that, in its own task; so the streams hold a slot of their
//! own until they end: at most [`MAX_STREAMS`] in the broker and
//! [`MAX_STREAMS_PER_IDENTITY`] for one caller. Past either, `RESOURCE_EXHAUSTED` at once:
//! one caller's flood of streams never takes every slot, and another caller is served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::BrokerError;

/// Sealing streams in flight in the broker at most.
pub const MAX_STREAMS: usize = 32;
/// Sealing streams in flight for one identity at most.
pub const MAX_STREAMS_PER_IDENTITY: usize = 8;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_identity: HashMap<String, usize>,
}

/// The slots of the broker's sealing streams.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    counts: Arc<Mutex<Counts>>,
    total: usize,
    per_identity: usize,
}

/// One stream's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    identity: String,
}

impl Default for StreamSlots {
    fn default() -> Self {
        StreamSlots::new(MAX_STREAMS, MAX_STREAMS_PER_IDENTITY)
    }
}

impl StreamSlots {
    pub fn new(total: usize, per_identity: usize) -> Self {
        StreamSlots {
            counts: Arc::default(),
            total,
            per_identity,
        }
    }

    /// A slot for a stream of `identity`.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` when the broker or this identity has no slot left.
    pub fn take(&self, identity: &str) -> Result<Slot, BrokerError> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counts.by_identity.get(identity).copied().unwrap_or(0);
        if mine >= self.per_identity {
            return Err(BrokerError::ResourceExhausted(format!(
                "this caller has {mine} sealing streams open, the most one caller may; \
                 retry when one ends"
            )));
        }
        if counts.total >= self.total {
            return Err(BrokerError::ResourceExhausted(
                "the broker has as many sealing streams open as it serves at once; retry later"
                    .into(),
            ));
        }
        counts.total += 1;
        *counts.by_identity.entry(identity.to_string()).or_insert(0) += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            identity: identity.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_identity.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_identity.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_cannot_take_every_slot_and_slots_come_back() {
        let slots = StreamSlots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert!(matches!(
            slots.take("a"),
            Err(BrokerError::ResourceExhausted(_))
        ));
        let _b1 = slots.take("b").unwrap();
        // The broker is full now, for everyone.
        assert!(matches!(
            slots.take("c"),
            Err(BrokerError::ResourceExhausted(_))
        ));
        drop(a1);
        let _c1 = slots.take("c").unwrap();
        assert!(matches!(
            slots.take("a"),
            Err(BrokerError::ResourceExhausted(_))
        ));
    }
}
