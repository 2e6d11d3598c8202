//! [`StoreCall`]: the answer to a store request, to `.await` on the async path or to
//! `wait()` for at start-up and in tests. The store does its blocking work on its own
//! threads (see `sqlite/worker.rs`); a caller holds one of these meanwhile, so no tokio
//! worker ever blocks on SQLite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Result, StoreError};

/// Where a [`StoreCall`]'s answer comes from.
enum State<T> {
    /// Already known (a cache hit, a refusal before any work was queued).
    Ready(Option<Result<T>>),
    /// Sent by a store thread when it has run the request.
    Waiting(oneshot::Receiver<Result<T>>),
}

/// Runs when a call's answer is read (see [`StoreCall::inspect`]).
type Hook<T> = Box<dyn FnOnce(&Result<T>) + Send>;

/// A store request in flight. Dropping it does not cancel the request: a write that was
/// queued is made, and its effect is visible to later calls.
#[must_use = "a store request's outcome must be read"]
pub struct StoreCall<T> {
    state: State<T>,
    hook: Option<Hook<T>>,
}

// Nothing in a call is pinned in place: the answer is moved out whole.
impl<T> Unpin for StoreCall<T> {}

impl<T> std::fmt::Debug for StoreCall<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCall(..)")
    }
}

fn stopped() -> StoreError {
    StoreError::Database("the store stopped before answering".into())
}

impl<T> StoreCall<T> {
    /// A call answered already.
    pub fn ready(result: Result<T>) -> StoreCall<T> {
        StoreCall {
            state: State::Ready(Some(result)),
            hook: None,
        }
    }

    /// A call answered through `receiver` by whoever runs it.
    pub fn waiting(receiver: oneshot::Receiver<Result<T>>) -> StoreCall<T> {
        StoreCall {
            state: State::Waiting(receiver),
            hook: None,
        }
    }

    /// Runs `f` on the answer when the caller reads it (a call dropped unread never runs
    /// it): how a cache learns what a read returned.
    pub fn inspect(mut self, f: impl FnOnce(&Result<T>) + Send + 'static) -> StoreCall<T>
    where
        T: 'static,
    {
        self.hook = Some(match self.hook.take() {
            None => Box::new(f),
            Some(first) => Box::new(move |result| {
                first(result);
                f(result);
            }),
        });
        self
    }

    fn answered(&mut self, result: Result<T>) -> Result<T> {
        if let Some(hook) = self.hook.take() {
            hook(&result);
        }
        result
    }

    /// Blocks the calling thread until the answer arrives. Only for threads that may
    /// block: start-up before serving, tests, the CLI.
    ///
    /// # Errors
    /// Whatever the request failed with.
    pub fn wait(mut self) -> Result<T> {
        let result = match &mut self.state {
            State::Ready(result) => result.take().unwrap_or_else(|| Err(stopped())),
            State::Waiting(receiver) => receiver.recv_ref().unwrap_or_else(|_| Err(stopped())),
        };
        self.answered(result)
    }
}

impl<T> Future for StoreCall<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let answer = match &mut self.state {
            State::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| Err(stopped()))),
            State::Waiting(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|answer| answer.unwrap_or_else(|_| Err(stopped()))),
        };
        answer.map(|result| self.answered(result))
    }
}
