//! Policy text to a validated policy set: parse, name, validate strictly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    ParseErrors, Policy, PolicyId, PolicySet, ValidationMode, ValidationWarning, Validator,
};

use super::error::{AuthzError, PolicyProblem};
use super::source::statements;

/// One piece of policy text and where it came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Text<'a> {
    pub text: &'a str,
    pub file: Option<&'a Path>,
}

/// Where a policy was written.
#[derive(Debug, Clone)]
struct Origin {
    file: Option<PathBuf>,
    line: Option<usize>,
}

impl Origin {
    fn problem(&self, id: &str, message: String) -> PolicyProblem {
        PolicyProblem {
            policy: Some(id.to_string()),
            file: self.file.clone(),
            line: self.line,
            message,
        }
    }
}

/// Parses the texts in order, as if concatenated, and validates the result strictly.
///
/// Each policy's id is its `@id("...")` annotation, or else Cedar's default `policyN`
/// (N counts the statements of all texts from 0). Templates, empty ids and duplicate ids
/// are refused.
pub(super) fn compile(validator: &Validator, texts: &[Text<'_>]) -> Result<PolicySet, AuthzError> {
    let mut set = PolicySet::new();
    let mut origins: HashMap<String, Origin> = HashMap::new();
    let mut ordered: Vec<String> = Vec::new();
    let mut offset = 0;
    for piece in texts {
        let parsed = PolicySet::from_str(piece.text)
            .map_err(|e| AuthzError::Parse(parse_problem(piece, offset, &e)))?;
        let located = statements(piece.text);
        let count = parsed.num_of_policies() + parsed.num_of_templates();
        // Cedar numbers statements in text order; trust our split only if it agrees.
        let lines_known = located.len() == count;
        let origin = |index: usize| Origin {
            file: piece.file.map(Path::to_path_buf),
            line: located
                .get(index)
                .filter(|_| lines_known)
                .map(|statement| statement.line),
        };
        if let Some(template) = parsed.templates().next() {
            let index = default_index(template.id());
            let id = template
                .annotation("id")
                .map_or_else(|| format!("policy{}", offset + index), str::to_string);
            return Err(AuthzError::Refused(
                origin(index).problem(
                    &id,
                    "templates (policies with ?principal or ?resource slots) are not supported"
                        .to_string(),
                ),
            ));
        }
        let mut policies: Vec<(usize, &Policy)> = parsed
            .policies()
            .map(|policy| (default_index(policy.id()), policy))
            .collect();
        policies.sort_by_key(|(index, _)| *index);
        for (index, policy) in policies {
            let here = origin(index);
            let id = match policy.annotation("id") {
                Some("") => {
                    return Err(AuthzError::Refused(here.problem(
                        &format!("policy{}", offset + index),
                        "the @id annotation is empty".to_string(),
                    )));
                }
                Some(id) => id.to_string(),
                None => format!("policy{}", offset + index),
            };
            if let Some(first) = origins.get(&id) {
                let message = match (&first.file, first.line) {
                    (Some(file), Some(line)) => format!("{}:{line}", file.display()),
                    (None, Some(line)) => format!("line {line}"),
                    (Some(file), None) => file.display().to_string(),
                    (None, None) => "another policy".to_string(),
                };
                return Err(AuthzError::Refused(
                    here.problem(&id, format!("the id is already used by {message}")),
                ));
            }
            set.add(policy.new_id(PolicyId::new(&id)))
                .map_err(|e| AuthzError::Refused(here.problem(&id, e.to_string())))?;
            ordered.push(id.clone());
            origins.insert(id, here);
        }
        offset += count;
    }
    validate(validator, &set, &origins, &ordered)?;
    Ok(set)
}

/// Strict validation. Besides Cedar's errors, refuses policies Cedar only warns about
/// that can never apply (a typo in a `forbid` must not pass silently) or that hide text
/// with bidirectional control characters. Other warnings are logged.
fn validate(
    validator: &Validator,
    set: &PolicySet,
    origins: &HashMap<String, Origin>,
    ordered: &[String],
) -> Result<(), AuthzError> {
    let result = validator.validate(set, ValidationMode::Strict);
    let mut found: Vec<(String, String)> = result
        .validation_errors()
        .map(|error| (error.policy_id().to_string(), error.to_string()))
        .collect();
    for warning in result.validation_warnings() {
        let id = warning.policy_id().to_string();
        if found.iter().any(|(known, _)| *known == id) {
            continue; // its errors say more
        }
        match warning {
            ValidationWarning::ImpossiblePolicy(_)
            | ValidationWarning::InvalidActionApplication(_)
            | ValidationWarning::BidiCharsInString(_)
            | ValidationWarning::BidiCharsInIdentifier(_) => {
                found.push((id, warning.to_string()));
            }
            _ => tracing::warn!(policy = %id, "authorization policy: {warning}"),
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    // One problem per policy, in text order; Cedar repeats a message per action.
    let mut by_policy: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (id, message) in found {
        let message = strip_policy_prefix(&id, &message);
        match by_policy.iter_mut().find(|(_, known, _)| *known == id) {
            Some((_, _, messages)) => messages.push(message),
            None => {
                let rank = ordered.iter().position(|o| *o == id).unwrap_or(usize::MAX);
                by_policy.push((rank, id, vec![message]));
            }
        }
    }
    by_policy.sort_by_key(|(rank, _, _)| *rank);
    let problems = by_policy
        .into_iter()
        .map(|(_, id, mut messages)| {
            messages.sort();
            messages.dedup();
            let origin = origins.get(&id).cloned().unwrap_or(Origin {
                file: None,
                line: None,
            });
            origin.problem(&id, summarize(&messages))
        })
        .collect();
    Err(AuthzError::Invalid(problems))
}

/// Cedar's messages start with "for policy `id`, " which the problem already says.
fn strip_policy_prefix(id: &str, message: &str) -> String {
    let prefix = format!("for policy `{id}`");
    match message.strip_prefix(&prefix) {
        Some(rest) => rest.trim_start_matches([',', ':', ' ']).to_string(),
        None => message.to_string(),
    }
}

/// At most three messages, and how many more there were.
fn summarize(messages: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = messages
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if messages.len() > SHOWN {
        text.push_str(&format!("; and {} more like these", messages.len() - SHOWN));
    }
    text
}

/// N in Cedar's default id `policyN`.
fn default_index(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Names the first statement that does not parse on its own, with Cedar's messages.
fn parse_problem(piece: &Text<'_>, offset: usize, whole: &ParseErrors) -> PolicyProblem {
    let file = piece.file.map(Path::to_path_buf);
    for (index, statement) in statements(piece.text).into_iter().enumerate() {
        if let Err(errors) = PolicySet::from_str(statement.text) {
            return PolicyProblem {
                policy: Some(
                    statement
                        .id
                        .unwrap_or_else(|| format!("policy{}", offset + index)),
                ),
                file,
                line: Some(statement.line),
                message: messages(&errors),
            };
        }
    }
    PolicyProblem {
        policy: None,
        file,
        line: None,
        message: messages(whole),
    }
}

fn messages(errors: &ParseErrors) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
