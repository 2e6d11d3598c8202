//! A pool of sessions on one token, logged in once and healed when lost.
//!
//! `Session` is `Send` but not `Sync`, so each request borrows one session for its whole
//! duration. Login state belongs to the application, so the pool logs in once; a session
//! whose handle, login or token is lost is discarded, a new one is opened and logged in,
//! and the request is retried once (LESSONS: boulder #3468, yubihsm-shell #379). Object
//! handles are cached per session and found again by `CKA_ID` when they go stale.
//!
//! When a call fails in a way a broken token would explain (an object or the token not
//! found, a session that cannot be opened) and the token no longer answers
//! `C_GetTokenInfo` as itself, the pool re-initialises the module and retries once, at
//! most once per [`RECOVERY_INTERVAL`]: so a token whose files were restored, or a device
//! that came back, serves again without a restart. A token that merely lacks one key
//! answers, and costs nothing more than that question.

use hashlink::LruCache;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::error::{HsmError, Op, Result};
use crate::module::{Pkcs11Module, Token, TokenSelector};
use crate::pin::Pin;
use crate::quirks::Quirks;

pub(crate) use crate::pooled_session::{PooledSession, UsageCheck, already_checked};
use crate::token_claim::TokenClaim;

mod lease;
use lease::Lease;

/// How many sessions to keep and how long a request may wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Sessions opened on the token; also the bound on concurrent operations.
    pub size: usize,
    /// How long a request waits for a free session before [`HsmError::PoolExhausted`].
    pub checkout_timeout: Duration,
    /// Most keys whose object handles one session remembers; the least recently used is
    /// forgotten first. A forgotten key costs a search of the token when it is next used
    /// (0.2 to 0.3 s on SoftHSM2's file store at 10,000 keys), so the default is large:
    /// about 150 bytes a key, so at most about 2.5 MB a session.
    pub cached_keys: usize,
}

impl PoolConfig {
    /// Most sessions a pool may hold.
    pub const MAX_SIZE: usize = 256;
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 4,
            checkout_timeout: Duration::from_secs(5),
            cached_keys: 16_384,
        }
    }
}

/// The least time between two re-initialisations of the module by one pool.
pub(crate) const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

struct PoolState {
    idle: Vec<PooledSession>,
    open: usize,
}

/// Sessions on one token, logged in as the user.
pub(crate) struct SessionPool {
    module: Pkcs11Module,
    serial: String,
    slot: Mutex<Slot>,
    pin: Pin,
    quirks: Quirks,
    config: PoolConfig,
    state: Mutex<PoolState>,
    freed: Condvar,
    epoch: AtomicU64,
    last_recovery: Mutex<Option<Instant>>,
    // Last: released only after every session has closed.
    _claim: TokenClaim,
}

impl fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPool")
            .field("token_serial", &self.serial)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SessionPool {
    /// Opens the pool's sessions on `token` and logs in with `pin`.
    pub(crate) fn open(
        module: Pkcs11Module,
        token: &Token,
        pin: Pin,
        config: PoolConfig,
    ) -> Result<SessionPool> {
        if config.size == 0 || config.size > PoolConfig::MAX_SIZE {
            return Err(HsmError::InvalidInput(format!(
                "pool size must be 1 to {}, not {}",
                PoolConfig::MAX_SIZE,
                config.size
            )));
        }
        let claim = TokenClaim::take(&token.description.serial)?;
        let pool = SessionPool {
            module,
            serial: token.description.serial.clone(),
            slot: Mutex::new(token.slot),
            pin,
            quirks: token.description.quirks(),
            config,
            state: Mutex::new(PoolState {
                idle: Vec::with_capacity(config.size),
                open: 0,
            }),
            freed: Condvar::new(),
            epoch: AtomicU64::new(0),
            last_recovery: Mutex::new(None),
            _claim: claim,
        };
        let generation = *pool.module.calls();
        let mut sessions = Vec::with_capacity(config.size);
        sessions.push(pool.first_session(generation)?);
        for _ in 1..config.size {
            sessions.push(pool.new_session(generation)?);
        }
        let mut state = pool.lock();
        state.open = sessions.len();
        state.idle = sessions;
        drop(state);
        Ok(pool)
    }

    /// The token's quirks.
    pub(crate) fn quirks(&self) -> Quirks {
        self.quirks
    }

    /// Runs `f` on a pooled session. If the session, its login or the token was lost, the
    /// session is replaced (new session, new login) and `f` runs once more; if the token
    /// itself broke, the module is re-initialised first.
    pub(crate) fn run<T>(&self, mut f: impl FnMut(&mut PooledSession) -> Result<T>) -> Result<T> {
        match self.run_once(&mut f) {
            (Err(e), generation) if e.token_suspect() && self.recover(generation, &e) => {
                self.run_once(&mut f).0
            }
            (result, _) => result,
        }
    }

    /// One attempt, holding off re-initialisation meanwhile; also returns the module
    /// generation it ran against.
    fn run_once<T>(&self, f: &mut impl FnMut(&mut PooledSession) -> Result<T>) -> (Result<T>, u64) {
        let call = self.module.calls();
        let generation = *call;
        let result = self.run_on_lease(generation, f);
        drop(call);
        (result, generation)
    }

    fn run_on_lease<T>(
        &self,
        generation: u64,
        f: &mut impl FnMut(&mut PooledSession) -> Result<T>,
    ) -> Result<T> {
        let mut lease = self.checkout(generation)?;
        let epoch = self.epoch.load(Ordering::Acquire);
        let session = lease.session()?;
        session.sync_epoch(epoch);
        match f(session) {
            Err(e) if e.session_lost() => {
                tracing::warn!(token = %self.serial, error = %e, "HSM session lost; re-opening");
                lease.replace()?;
                let result = f(lease.session()?);
                if matches!(&result, Err(e) if e.session_lost()) {
                    lease.discard();
                }
                result
            }
            other => other,
        }
    }

    /// Re-initialises the module if the token no longer answers as itself, at most once
    /// per [`RECOVERY_INTERVAL`]. Returns whether it did (so the call is worth retrying).
    fn recover(&self, generation: u64, error: &HsmError) -> bool {
        let call = self.module.calls();
        let answers = self.token_answers();
        drop(call);
        if answers {
            return false;
        }
        {
            let mut last = self.last_recovery.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < RECOVERY_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(token = %self.serial, error = %error,
            "the HSM token does not answer; re-initialising the PKCS#11 module");
        if let Err(e) = self.module.reinitialize(generation) {
            tracing::error!(token = %self.serial, error = %e, "PKCS#11 recovery failed");
            return false;
        }
        let _call = self.module.calls();
        match self
            .module
            .find_token(&TokenSelector::Serial(self.serial.clone()))
        {
            Ok(token) => *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = token.slot,
            Err(e) => tracing::warn!(token = %self.serial, error = %e, "token still absent"),
        }
        true
    }

    /// Whether the pool's slot still holds its token, answering `C_GetTokenInfo`. The
    /// caller holds [`Pkcs11Module::calls`].
    fn token_answers(&self) -> bool {
        let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
        self.module.token_serial(slot).as_deref() == Some(self.serial.as_str())
    }

    /// Invalidates every session's cached handles (after a key is destroyed).
    pub(crate) fn invalidate_handles(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self, generation: u64) -> Result<Lease<'_>> {
        let deadline = Instant::now() + self.config.checkout_timeout;
        let mut state = self.lock();
        loop {
            match state.idle.pop() {
                Some(session) if session.generation == generation => {
                    return Ok(Lease::new(self, session, generation));
                }
                // Opened before the module was re-initialised: void. Its place is reused.
                Some(stale) => {
                    stale.retire(generation);
                    state.open = state.open.saturating_sub(1);
                    continue;
                }
                None => {}
            }
            if state.open < self.config.size {
                // A session was lost earlier: heal the pool by opening a new one.
                state.open += 1;
                drop(state);
                return match self.new_session(generation) {
                    Ok(session) => Ok(Lease::new(self, session, generation)),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HsmError::PoolExhausted(self.config.checkout_timeout));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// How many keys each idle session remembers handles for.
    pub(crate) fn cached_keys(&self) -> Vec<usize> {
        self.lock().idle.iter().map(|s| s.keys.len()).collect()
    }

    fn checkin(&self, session: PooledSession) {
        self.lock().idle.push(session);
        self.freed.notify_one();
    }

    fn release_slot(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.freed.notify_one();
    }

    /// Opens a read-write session and makes sure the application is logged in.
    fn new_session(&self, generation: u64) -> Result<PooledSession> {
        let session = match self.open_on_current_slot() {
            Ok(session) if self.token_answers() => session,
            // The token may have moved (re-inserted, or the HSM restarted): find it again.
            _ => {
                let token = self
                    .module
                    .find_token(&TokenSelector::Serial(self.serial.clone()))
                    .map_err(|e| HsmError::TokenUnavailable(e.to_string()))?;
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = token.slot;
                self.open_on_current_slot()?
            }
        };
        match session.login(UserType::User, Some(self.pin.secret())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(HsmError::from_pkcs11(e, Op::General, &self.quirks)),
        }
        Ok(PooledSession {
            session,
            quirks: self.quirks,
            keys: LruCache::new(self.config.cached_keys.max(1)),
            epoch: self.epoch.load(Ordering::Acquire),
            generation,
        })
    }

    /// Opens the first session and logs in such that a wrong PIN is always caught: if the
    /// process was already logged in, it logs out and in again.
    fn first_session(&self, generation: u64) -> Result<PooledSession> {
        let session = self.open_on_current_slot()?;
        let map = |e| HsmError::from_pkcs11(e, Op::General, &self.quirks);
        match session.login(UserType::User, Some(self.pin.secret())) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                session.logout().map_err(map)?;
                session
                    .login(UserType::User, Some(self.pin.secret()))
                    .map_err(map)?;
            }
            Err(e) => return Err(map(e)),
        }
        Ok(PooledSession {
            session,
            quirks: self.quirks,
            keys: LruCache::new(self.config.cached_keys.max(1)),
            epoch: self.epoch.load(Ordering::Acquire),
            generation,
        })
    }

    fn open_on_current_slot(&self) -> Result<Session> {
        let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
        self.module
            .context()
            .open_rw_session(slot)
            .map_err(|e| HsmError::from_pkcs11(e, Op::General, &self.quirks))
    }
}
