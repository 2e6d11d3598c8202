//! Why a policy was not loaded.

use std::fmt;
use std::path::PathBuf;

/// One problem with one policy, located as precisely as is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The policy's id (`@id` or `policyN`), when it could be told.
    pub policy: Option<String>,
    /// The file it came from, when loaded from files.
    pub file: Option<PathBuf>,
    /// The 1-based line where the policy starts, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(id) => write!(f, "policy `{id}`")?,
            None => f.write_str("policy text")?,
        }
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, " ({}:{line})", file.display())?,
            (Some(file), None) => write!(f, " ({})", file.display())?,
            (None, Some(line)) => write!(f, " (line {line})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a policy could not be loaded or replaced. The policy in force, if any, stays.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// A policy file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `from_files` with no files, or `reload` on a policy not loaded from files.
    #[error("no policy files to load")]
    NoPolicyFiles,
    /// The text is not Cedar.
    #[error("policy does not parse: {0}")]
    Parse(PolicyProblem),
    /// Policies that parse but do not validate (strictly) against the schema.
    #[error("policy does not validate against the schema: {}", join(.0))]
    Invalid(Vec<PolicyProblem>),
    /// A policy the broker refuses: a template, a duplicate or empty id.
    #[error("policy refused: {0}")]
    Refused(PolicyProblem),
    /// An operation was handed an authorization for another action (a bug).
    #[error("the authorization does not cover {0}")]
    NotAuthorized(super::Action),
    /// The built-in schema did not load (a build defect; tests catch it).
    #[error("the built-in Cedar schema is invalid: {0}")]
    Schema(String),
}

fn join(problems: &[PolicyProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
