//! The policy in force, how it is replaced, and the decisions it makes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use cedar_policy::PolicySet;
use sha2::{Digest, Sha256};

use super::compile::{Text, compile};
use super::error::AuthzError;
use super::request::Engine;
use super::{Action, AuthzRequest, Decision, PolicyInfo};
use crate::request::Authorized;

fn require(auth: &Authorized, action: Action) -> Result<(), AuthzError> {
    auth.require_broker(action)
        .map_err(|_| AuthzError::NotAuthorized(action))
}

/// A validated policy set and what it was made from.
struct Loaded {
    set: PolicySet,
    info: PolicyInfo,
}

/// Decides calls against the policy in force; deny by default.
///
/// Shared between request handlers (`Send + Sync`). Replacing the policy
/// ([`set_policy`](Authorizer::set_policy), [`reload`](Authorizer::reload)) is atomic:
/// a decision sees the old policy or the new one, never a mix, and a policy that does not
/// parse or validate never replaces the one in force.
pub struct Authorizer {
    engine: Engine,
    files: Vec<PathBuf>,
    current: RwLock<Arc<Loaded>>,
}

impl Authorizer {
    /// Loads the policy from files, concatenated in order, validated strictly against
    /// the schema. [`reload`](Authorizer::reload) re-reads the same files.
    ///
    /// # Errors
    /// [`AuthzError::NoPolicyFiles`] for an empty list, [`AuthzError::Io`] naming an
    /// unreadable file, or a parse or validation error naming the policy and its file.
    pub fn from_files(paths: &[PathBuf]) -> Result<Authorizer, AuthzError> {
        let engine = Engine::new()?;
        let loaded = load_files(&engine, paths)?;
        Ok(Authorizer {
            engine,
            files: paths.to_vec(),
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Loads the policy from text, validated strictly against the schema. An empty text
    /// is an empty policy, which denies everything.
    ///
    /// # Errors
    /// A parse or validation error naming the policy.
    pub fn from_text(text: &str) -> Result<Authorizer, AuthzError> {
        let engine = Engine::new()?;
        let loaded = load_text(&engine, text)?;
        Ok(Authorizer {
            engine,
            files: Vec::new(),
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Validates `text` and, if it is good, puts it in force. Until the next
    /// [`reload`](Authorizer::reload), if the policy came from files.
    ///
    /// # Errors
    /// A parse or validation error naming the policy; the old policy stays in force.
    pub fn set_policy(&self, auth: &Authorized, text: &str) -> Result<PolicyInfo, AuthzError> {
        require(auth, Action::SetPolicy)?;
        let loaded = load_text(&self.engine, text)?;
        Ok(self.swap(loaded))
    }

    /// Re-reads the files given to [`from_files`](Authorizer::from_files) and, if they
    /// are good, puts them in force.
    ///
    /// # Errors
    /// [`AuthzError::NoPolicyFiles`] if the policy did not come from files; otherwise
    /// as [`from_files`](Authorizer::from_files). The old policy stays in force.
    pub fn reload(&self, auth: &Authorized) -> Result<PolicyInfo, AuthzError> {
        require(auth, Action::ReloadPolicy)?;
        self.reload_files()
    }

    /// As [`reload`](Authorizer::reload), on the operator's SIGHUP: the signal comes from
    /// the host, not from a caller, so there is no call to authorize.
    ///
    /// # Errors
    /// As [`reload`](Authorizer::reload).
    pub fn reload_on_hangup(&self) -> Result<PolicyInfo, AuthzError> {
        self.reload_files()
    }

    fn reload_files(&self) -> Result<PolicyInfo, AuthzError> {
        let loaded = load_files(&self.engine, &self.files)?;
        Ok(self.swap(loaded))
    }

    /// The policy in force, for start-up and for the CLI's offline checks.
    pub fn policy(&self) -> PolicyInfo {
        self.current().info.clone()
    }

    /// The policy in force, for a caller allowed `GetPolicy`.
    ///
    /// # Errors
    /// [`AuthzError::NotAuthorized`] for another call's authorization.
    pub fn policy_for(&self, auth: &Authorized) -> Result<PolicyInfo, AuthzError> {
        require(auth, Action::GetPolicy)?;
        Ok(self.policy())
    }

    /// The decision the policy in force makes for `request`, for a caller allowed
    /// `ExplainDecision`.
    ///
    /// # Errors
    /// [`AuthzError::NotAuthorized`] for another call's authorization.
    pub fn explain(
        &self,
        auth: &Authorized,
        request: &AuthzRequest<'_>,
    ) -> Result<Decision, AuthzError> {
        require(auth, Action::ExplainDecision)?;
        Ok(self.authorize(request))
    }

    /// The files the policy is loaded from; empty if it came from text.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Decides one call. Allowed only if a `permit` matches and no `forbid` does; a
    /// request that cannot be built (such as a Key action on the Broker) or a policy that
    /// fails to evaluate denies, with the reason in [`Decision::errors`].
    pub fn authorize(&self, request: &AuthzRequest<'_>) -> Decision {
        let current = self.current();
        let decision = self.engine.decide(&current.set, request);
        tracing::debug!(
            principal = %request.principal,
            action = %request.action,
            allowed = decision.allowed,
            policies = ?decision.policies,
            errors = ?decision.errors,
            "authorization decision"
        );
        decision
    }

    fn current(&self) -> Arc<Loaded> {
        // Nothing panics while holding the lock, but a poisoned lock still holds a
        // complete policy: the swap is a single assignment.
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn swap(&self, loaded: Loaded) -> PolicyInfo {
        let info = loaded.info.clone();
        let loaded = Arc::new(loaded);
        match self.current.write() {
            Ok(mut guard) => *guard = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        tracing::info!(
            digest = %info.digest_hex,
            policies = info.policies,
            "authorization policy in force"
        );
        info
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.policy();
        f.debug_struct("Authorizer")
            .field("files", &self.files)
            .field("digest_hex", &info.digest_hex)
            .field("policies", &info.policies)
            .finish_non_exhaustive()
    }
}

fn load_text(engine: &Engine, text: &str) -> Result<Loaded, AuthzError> {
    let set = compile(engine.validator(), &[Text { text, file: None }])?;
    Ok(loaded(set, text.to_string()))
}

fn load_files(engine: &Engine, paths: &[PathBuf]) -> Result<Loaded, AuthzError> {
    if paths.is_empty() {
        return Err(AuthzError::NoPolicyFiles);
    }
    let contents = paths
        .iter()
        .map(|path| {
            std::fs::read_to_string(path).map_err(|source| AuthzError::Io {
                path: path.clone(),
                source,
            })
        })
        .collect::<Result<Vec<String>, AuthzError>>()?;
    let texts: Vec<Text<'_>> = contents
        .iter()
        .zip(paths)
        .map(|(text, path)| Text {
            text,
            file: Some(Path::new(path)),
        })
        .collect();
    let set = compile(engine.validator(), &texts)?;
    Ok(loaded(set, contents.join("\n")))
}

fn loaded(set: PolicySet, text: String) -> Loaded {
    let info = PolicyInfo {
        digest_hex: hex::encode(Sha256::digest(text.as_bytes())),
        policies: set.num_of_policies(),
        text,
    };
    Loaded { set, info }
}
