//! The worker thread that owns the TPM connection, and the handle callers use.
//!
//! The ESAPI context is not `Sync`, and a TPM executes one command at a time anyway, so
//! one thread owns it and serves a bounded queue of requests. A caller gets a
//! [`Pending`] result it can `wait()` for or `.await`. When a request fails and the TPM no
//! longer answers, the worker drops the connection, reconnects and retries the request
//! once (if it is safe to repeat); calls while the TPM is away fail with
//! [`TpmError::Unavailable`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;

use crate::connection::{Connection, SrkSource};
use crate::error::{Result, TpmError};
use crate::hierarchy::HierarchyAuths;
use crate::tcti::Tcti;

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// How to reach the TPM and how much work may wait for it.
#[derive(Debug, Clone)]
pub struct TpmConfig {
    /// Which TPM.
    pub tcti: Tcti,
    /// Where the SRK comes from.
    pub srk: SrkSource,
    /// Requests that may wait for the TPM before callers get [`TpmError::Busy`].
    pub queue_depth: usize,
    /// The owner and endorsement auth to present (empty when `None`).
    pub hierarchy_auth: HierarchyAuths,
}

impl TpmConfig {
    /// Defaults for a TCTI: SRK from the template, 256 queued requests.
    pub fn new(tcti: Tcti) -> TpmConfig {
        TpmConfig {
            tcti,
            srk: SrkSource::Template,
            queue_depth: 256,
            hierarchy_auth: HierarchyAuths::default(),
        }
    }
}

pub(crate) struct Worker {
    config: TpmConfig,
    connection: Option<Connection>,
    /// Whether `connection` is open, for [`TpmBackend::is_connected`].
    connected: Arc<AtomicBool>,
}

/// Whether a request may run twice if the connection broke under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Safe,
    Never,
}

impl Worker {
    fn connection(&mut self) -> Result<&mut Connection> {
        match &mut self.connection {
            Some(connection) => Ok(connection),
            slot @ None => {
                let opened = Connection::open(
                    &self.config.tcti,
                    self.config.srk,
                    &self.config.hierarchy_auth,
                )?;
                self.connected.store(true, Ordering::Relaxed);
                Ok(slot.insert(opened))
            }
        }
    }

    pub(crate) fn execute<T>(
        &mut self,
        retry: Retry,
        op: &mut dyn FnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let first = op(self.connection()?);
        let Err(error) = first else { return first };
        if matches!(error, TpmError::Lockout(None)) {
            // Say how long it lasts: the counters are read without authorization.
            let state = self.connection.as_mut().and_then(Connection::lockout_state);
            return Err(TpmError::Lockout(state));
        }
        let reset = matches!(error, TpmError::Reset(_));
        if !reset && self.connection.as_mut().is_some_and(Connection::alive) {
            return Err(error);
        }
        tracing::warn!(tcti = self.config.tcti.as_str(), %error, "TPM connection lost or TPM reset; reconnecting");
        self.connection = None;
        self.connected.store(false, Ordering::Relaxed);
        let connection = self.connection()?;
        match retry {
            Retry::Safe => op(connection),
            Retry::Never => Err(TpmError::Unavailable(format!(
                "the connection broke during the call: {error}"
            ))),
        }
    }
}

fn serve(mut worker: Worker, jobs: Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        job(&mut worker);
    }
}

/// A handle on one TPM. Cheap to clone and safe to share between threads. When the last
/// clone is dropped, the worker finishes the queued requests, flushes what it loaded and
/// stops before the drop returns.
#[derive(Debug, Clone)]
pub struct TpmBackend {
    // Declared before `worker`: the sender must be gone before the worker is joined.
    jobs: SyncSender<Job>,
    queue_depth: usize,
    connected: Arc<AtomicBool>,
    _worker: Arc<WorkerThread>,
}

#[derive(Debug)]
struct WorkerThread(Option<JoinHandle<()>>);

impl Drop for WorkerThread {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

impl TpmBackend {
    /// Starts the worker and connects.
    ///
    /// # Errors
    /// [`TpmError::Unavailable`] if the TPM cannot be reached; template or handle errors.
    pub fn connect(config: TpmConfig) -> Result<TpmBackend> {
        let backend = TpmBackend::start(config)?;
        backend.probe().wait()?;
        Ok(backend)
    }

    /// Starts the worker without connecting: the first request (or [`TpmBackend::probe`])
    /// connects, and each request after a failed one tries again. For a service that must
    /// start while its TPM is away.
    ///
    /// # Errors
    /// [`TpmError::Unavailable`] if the worker thread cannot be started.
    pub fn start(config: TpmConfig) -> Result<TpmBackend> {
        let queue_depth = config.queue_depth.max(1);
        let (jobs, queue) = sync_channel::<Job>(queue_depth);
        let connected = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            config,
            connection: None,
            connected: connected.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tpm-worker".into())
            .spawn(move || serve(worker, queue))
            .map_err(|e| TpmError::Unavailable(format!("cannot start the TPM worker: {e}")))?;
        Ok(TpmBackend {
            jobs,
            queue_depth,
            connected,
            _worker: Arc::new(WorkerThread(Some(thread))),
        })
    }

    /// Whether the worker holds an open connection to the TPM: false before the first
    /// successful connect, and from a lost connection until the next.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connects if not connected: succeeds once the TPM answers.
    pub fn probe(&self) -> Pending<()> {
        self.submit(Retry::Safe, |_| Ok(()))
    }

    /// How many transient objects the TPM holds now: the SRK, the cached keys, and
    /// nothing else once every request is done. For diagnostics and leak tests.
    pub fn transient_objects(&self) -> Pending<usize> {
        self.submit(Retry::Safe, Connection::transient_objects)
    }

    pub(crate) fn submit<T: Send + 'static>(
        &self,
        retry: Retry,
        mut op: impl FnMut(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Pending<T> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |worker: &mut Worker| {
            let _ = reply.send(worker.execute(retry, &mut op));
        });
        match self.jobs.try_send(job) {
            Ok(()) => Pending(State::Waiting(result)),
            Err(TrySendError::Full(_)) => {
                Pending(State::Failed(Some(TpmError::Busy(self.queue_depth))))
            }
            Err(TrySendError::Disconnected(_)) => Pending(State::Failed(Some(
                TpmError::Unavailable("the TPM worker has stopped".into()),
            ))),
        }
    }
}

enum State<T> {
    Waiting(oneshot::Receiver<Result<T>>),
    Failed(Option<TpmError>),
}

/// The result of a TPM request, to `wait()` for or `.await`.
#[must_use = "a TPM request does nothing visible until its result is read"]
pub struct Pending<T>(State<T>);

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending(..)")
    }
}

fn worker_gone() -> TpmError {
    TpmError::Unavailable("the TPM worker stopped before answering".into())
}

impl<T> Pending<T> {
    /// Blocks until the TPM answers.
    ///
    /// # Errors
    /// Whatever the request failed with.
    pub fn wait(self) -> Result<T> {
        match self.0 {
            State::Waiting(result) => result.recv().unwrap_or_else(|_| Err(worker_gone())),
            State::Failed(error) => Err(error.unwrap_or_else(worker_gone)),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        match &mut self.0 {
            State::Waiting(result) => Pin::new(result)
                .poll(cx)
                .map(|answer| answer.unwrap_or_else(|_| Err(worker_gone()))),
            State::Failed(error) => Poll::Ready(Err(error.take().unwrap_or_else(worker_gone))),
        }
    }
}
