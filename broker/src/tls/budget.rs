//! The budget for TLS handshakes in flight, apart from established connections.
//!
//! A handshake costs a socket and a task before the peer has proved anything, so one
//! address must not be able to take them all: each source address (an IPv4 address, or an
//! IPv6 /64, which one host usually holds whole) may have a few handshakes in flight, and all
//! addresses together a bounded number. A connection that gets no ticket is closed at once.
//! Established connections are counted elsewhere ([`super::ConnectionLimits::max_connections`]),
//! so a flood of silent sockets cannot take the slots of authenticated clients, and the
//! other way round.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

/// Handshakes in flight, in total and per source address.
#[derive(Debug)]
pub(crate) struct HandshakeBudget {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<InFlight>,
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a handshake could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every handshake slot is taken.
    Total,
    /// This address has its share in flight.
    Address,
}

impl HandshakeBudget {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<HandshakeBudget> {
        Arc::new(HandshakeBudget {
            max_total,
            max_per_address,
            state: Mutex::new(InFlight::default()),
        })
    }

    /// A ticket for one handshake from `addr`, held until the handshake ends.
    pub(crate) fn try_start(self: &Arc<Self>, addr: IpAddr) -> Result<HandshakeTicket, Refusal> {
        let key = address_key(addr);
        let mut state = self.lock();
        if state.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let mine = state.per_address.entry(key).or_insert(0);
        if *mine >= self.max_per_address {
            return Err(Refusal::Address);
        }
        *mine += 1;
        state.total += 1;
        Ok(HandshakeTicket {
            budget: self.clone(),
            key,
        })
    }

    /// Handshakes in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().total
    }

    fn finish(&self, key: IpAddr) {
        let mut state = self.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(mine) = state.per_address.get_mut(&key) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                state.per_address.remove(&key);
            }
        }
    }

    /// The counters stay consistent whatever panicked while holding the lock (nothing in
    /// this module panics), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One handshake in flight; returns its slot when dropped.
#[derive(Debug)]
pub(crate) struct HandshakeTicket {
    budget: Arc<HandshakeBudget>,
    key: IpAddr,
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        self.budget.finish(self.key);
    }
}

/// The unit one client is assumed to control: an IPv4 address (IPv4-mapped IPv6 included),
/// or an IPv6 /64.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = v6.to_bits() & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from_bits(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_address_gets_its_share_and_all_together_the_total() {
        let budget = HandshakeBudget::new(3, 2);
        let a1 = budget.try_start(ip("10.0.0.1")).unwrap();
        let _a2 = budget.try_start(ip("10.0.0.1")).unwrap();
        assert_eq!(
            budget.try_start(ip("10.0.0.1")).unwrap_err(),
            Refusal::Address
        );
        let _b1 = budget.try_start(ip("10.0.0.2")).unwrap();
        assert_eq!(
            budget.try_start(ip("10.0.0.3")).unwrap_err(),
            Refusal::Total
        );
        assert_eq!(budget.in_flight(), 3);
        drop(a1);
        assert_eq!(budget.in_flight(), 2);
        let _a3 = budget.try_start(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn one_ipv6_slash_64_is_one_address_and_mapped_ipv4_is_ipv4() {
        let budget = HandshakeBudget::new(100, 1);
        let _x = budget.try_start(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            budget.try_start(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::Address
        );
        let _y = budget.try_start(ip("2001:db8:1:3::1")).unwrap();
        let _z = budget.try_start(ip("192.0.2.7")).unwrap();
        assert_eq!(
            budget.try_start(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refusal::Address
        );
    }

    #[test]
    fn finished_addresses_are_forgotten() {
        let budget = HandshakeBudget::new(10, 1);
        for i in 0..5u8 {
            drop(budget.try_start(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert!(budget.lock().per_address.is_empty());
        assert_eq!(budget.in_flight(), 0);
    }
}
