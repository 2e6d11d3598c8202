//! Policy text to a validated policy set: parse, name, validate strictly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{ParseErrors, Policy, PolicyId, PolicySet, ValidationMode, Validator};

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

fn validate(
    validator: &Validator,
    set: &PolicySet,
    origins: &HashMap<String, Origin>,
    ordered: &[String],
) -> Result<(), AuthzError> {
    let result = validator.validate(set, ValidationMode::Strict);
    for warning in result.validation_warnings() {
        tracing::warn!(policy = %warning.policy_id(), "authorization policy: {warning}");
    }
    let mut problems: Vec<(usize, PolicyProblem)> = result
        .validation_errors()
        .map(|error| {
            let id = error.policy_id().to_string();
            let rank = ordered.iter().position(|o| *o == id).unwrap_or(usize::MAX);
            let problem = match origins.get(&id) {
                Some(origin) => origin.problem(&id, error.to_string()),
                None => PolicyProblem {
                    policy: Some(id),
                    file: None,
                    line: None,
                    message: error.to_string(),
                },
            };
            (rank, problem)
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by_key(|(rank, _)| *rank);
    Err(AuthzError::Invalid(
        problems.into_iter().map(|(_, problem)| problem).collect(),
    ))
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
