//! Whether an established connection is in use, so that idle ones can be closed.
//!
//! "Idle" means no call open for the idle timeout, not "no bytes": an HTTP/2 peer can keep
//! bytes flowing with PING frames forever while asking for nothing. The request stack marks
//! each call's start and end ([`ConnectionActivity::call_started`]); the connection's reader
//! ([`super::TlsConnection`]) asks [`ConnectionActivity::idle_deadline`] when to give up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Shared by a connection and the calls made on it; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ConnectionActivity(Option<Arc<Activity>>);

#[derive(Debug)]
struct Activity {
    open_calls: AtomicUsize,
    /// When the connection last went from busy to idle (or was established).
    idle_since: Mutex<Instant>,
}

impl ConnectionActivity {
    /// Activity of a connection established now.
    pub(crate) fn new() -> ConnectionActivity {
        ConnectionActivity(Some(Arc::new(Activity {
            open_calls: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })))
    }

    /// Marks a call as open until the returned guard is dropped (when the call's response
    /// body has been sent, or abandoned). A default (untracked) activity does nothing.
    pub fn call_started(&self) -> CallGuard {
        if let Some(activity) = &self.0 {
            activity.open_calls.fetch_add(1, Ordering::AcqRel);
        }
        CallGuard(self.0.clone())
    }

    /// When the connection will have been idle for `idle_timeout`, if nothing happens in
    /// between: `now + idle_timeout` while a call is open.
    pub(crate) fn idle_deadline(&self, idle_timeout: Duration) -> Instant {
        let now = Instant::now();
        let Some(activity) = &self.0 else {
            return now + idle_timeout;
        };
        if activity.open_calls.load(Ordering::Acquire) > 0 {
            return now + idle_timeout;
        }
        *lock(&activity.idle_since) + idle_timeout
    }
}

/// Two handles are equal when they track the same connection (or neither tracks one).
impl PartialEq for ConnectionActivity {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for ConnectionActivity {}

/// An open call; see [`ConnectionActivity::call_started`].
#[derive(Debug)]
pub struct CallGuard(Option<Arc<Activity>>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(activity) = &self.0 {
            // Update the time first, so a reader never sees zero calls with an old time.
            *lock(&activity.idle_since) = Instant::now();
            activity.open_calls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn lock(m: &Mutex<Instant>) -> std::sync::MutexGuard<'_, Instant> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_open_call_postpones_the_deadline_and_its_end_restarts_it() {
        let idle = Duration::from_secs(10);
        let activity = ConnectionActivity::new();
        let established = Instant::now();
        assert_eq!(activity.idle_deadline(idle), established + idle);

        let call = activity.call_started();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(activity.idle_deadline(idle), Instant::now() + idle);
        drop(call);
        let ended = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(activity.idle_deadline(idle), ended + idle);
    }

    #[test]
    fn handles_compare_by_connection() {
        let a = ConnectionActivity::new();
        assert_eq!(a, a.clone());
        assert_ne!(a, ConnectionActivity::new());
        assert_eq!(ConnectionActivity::default(), ConnectionActivity::default());
        drop(ConnectionActivity::default().call_started());
    }
}
