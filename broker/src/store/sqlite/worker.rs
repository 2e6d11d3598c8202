//! The threads that own the SQLite connections, and the queues in front of them. Like
//! the TPM backend's worker (`tpm-backend/src/worker.rs`): a request is a closure sent
//! over a bounded channel, run on a store thread, and answered through a
//! [`StoreCall`]. A full queue is refused ([`StoreError::Busy`]) rather than waited on.
//!
//! One pool has one thread per connection, all serving one queue; the store uses one
//! pool of one writer and, for a database file, one pool of readers (WAL lets readers
//! run beside the writer and each other).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::store::{Result, StoreCall, StoreError};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A pool of store threads, each owning one connection. When the last clone is dropped,
/// the threads finish what is queued, close their connections and are joined.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    // Declared before `threads`: the sender must be gone before the threads are joined.
    jobs: SyncSender<Job>,
    depth: usize,
    _threads: Arc<Threads>,
}

#[derive(Debug)]
struct Threads(Vec<JoinHandle<()>>);

impl Drop for Threads {
    fn drop(&mut self) {
        for thread in self.0.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Pool {
    /// Starts one thread per connection, named `name-<n>`, serving a queue of `depth`.
    ///
    /// # Errors
    /// [`StoreError::Database`] if a thread cannot be started.
    pub(super) fn start(name: &str, connections: Vec<Connection>, depth: usize) -> Result<Pool> {
        let depth = depth.max(1);
        let (jobs, queue) = sync_channel::<Job>(depth);
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(connections.len());
        for (n, connection) in connections.into_iter().enumerate() {
            let queue = queue.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || serve(connection, &queue))
                .map_err(|e| StoreError::Database(format!("cannot start a store thread: {e}")))?;
            threads.push(thread);
        }
        Ok(Pool {
            jobs,
            depth,
            _threads: Arc::new(Threads(threads)),
        })
    }

    /// Queues `op` for the next free thread of the pool.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> StoreCall<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(op(connection));
        });
        match self.jobs.try_send(job) {
            Ok(()) => StoreCall::waiting(answer),
            Err(TrySendError::Full(_)) => StoreCall::ready(Err(StoreError::Busy(self.depth))),
            Err(TrySendError::Disconnected(_)) => {
                StoreCall::ready(Err(StoreError::Database("the store has stopped".into())))
            }
        }
    }
}

/// Runs jobs until every sender is gone. A job that panics loses its answer (its caller
/// gets an error) and rolls its transaction back; the thread goes on serving.
fn serve(mut connection: Connection, queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take a job, never while running one.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        if catch_unwind(AssertUnwindSafe(|| job(&mut connection))).is_err() {
            tracing::error!("a store request panicked; its transaction was rolled back");
        }
    }
}
