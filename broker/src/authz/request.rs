//! A call to Cedar entities, request and context, and Cedar's answer to a [`Decision`].

use std::str::FromStr;

use attest::claims::{Claims, TeeKind};
use cedar_policy::{
    AuthorizationError, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet,
    Request, RestrictedExpression, Schema, Validator,
};

use super::action::ResourceKind;
use super::error::AuthzError;
use super::{AuthzRequest, BROKER_ENTITY_ID, Decision, Resource, SCHEMA};

/// The schema and what is derived from it once: everything but the policy.
pub(super) struct Engine {
    schema: Schema,
    validator: Validator,
    cedar: cedar_policy::Authorizer,
    workload: EntityTypeName,
    key: EntityTypeName,
    secret: EntityTypeName,
    broker: EntityTypeName,
    action: EntityTypeName,
}

impl Engine {
    pub(super) fn new() -> Result<Engine, AuthzError> {
        let (schema, warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| AuthzError::Schema(e.to_string()))?;
        for warning in warnings {
            tracing::warn!("authorization schema: {warning}");
        }
        let name = |n: &str| {
            EntityTypeName::from_str(n).map_err(|e| AuthzError::Schema(format!("{n}: {e}")))
        };
        Ok(Engine {
            validator: Validator::new(schema.clone()),
            schema,
            cedar: cedar_policy::Authorizer::new(),
            workload: name("Keybroker::Workload")?,
            key: name("Keybroker::Key")?,
            secret: name("Keybroker::Secret")?,
            broker: name("Keybroker::Broker")?,
            action: name("Keybroker::Action")?,
        })
    }

    pub(super) fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Cedar's decision, denying on any error.
    pub(super) fn decide(&self, policies: &PolicySet, request: &AuthzRequest<'_>) -> Decision {
        let (cedar_request, entities) = match self.build(request) {
            Ok(built) => built,
            Err(message) => return Decision::error(message),
        };
        let response = self
            .cedar
            .is_authorized(&cedar_request, policies, &entities);
        let diagnostics = response.diagnostics();
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        for error in diagnostics.errors() {
            errors.push(error.to_string());
            match error {
                AuthorizationError::PolicyEvaluationError(e) => {
                    failed.push(e.policy_id().to_string());
                }
            }
        }
        if !errors.is_empty() {
            // Fail closed: a policy that could not be evaluated might have been a forbid.
            failed.sort();
            failed.dedup();
            return Decision {
                allowed: false,
                policies: failed,
                errors,
            };
        }
        let mut policies: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        policies.sort();
        Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policies,
            errors,
        }
    }

    fn build(&self, request: &AuthzRequest<'_>) -> Result<(Request, Entities), String> {
        let action = request.action;
        let kind = match request.resource {
            Resource::Key(_) => ResourceKind::Key,
            Resource::Secret(_) => ResourceKind::Secret,
            Resource::Broker => ResourceKind::Broker,
        };
        if kind != action.resource_kind() {
            return Err(format!(
                "{action} acts on a {:?}, not a {kind:?}",
                action.resource_kind()
            ));
        }
        let principal = uid(&self.workload, request.principal.as_str());
        let principal_entity = Entity::new_with_tags(
            principal.clone(),
            [
                (
                    "trust_domain".to_string(),
                    string(request.principal.trust_domain()),
                ),
                ("path".to_string(), string(request.principal.path())),
            ],
            [],
            [],
        )
        .map_err(|e| format!("principal: {e}"))?;
        let (resource, resource_entity) = match request.resource {
            Resource::Key(key) => {
                let id = uid(&self.key, key.name);
                let entity = Entity::new_with_tags(
                    id.clone(),
                    [
                        ("name".to_string(), string(key.name)),
                        ("algorithm".to_string(), string(key.algorithm)),
                        ("purpose".to_string(), string(key.purpose)),
                        ("backend".to_string(), string(key.backend)),
                        ("state".to_string(), string(key.state)),
                    ],
                    [],
                    key.tags.iter().map(|(k, v)| (k.clone(), string(v))),
                )
                .map_err(|e| format!("key {}: {e}", key.name))?;
                (id, entity)
            }
            Resource::Secret(name) => {
                let id = uid(&self.secret, name);
                let entity =
                    Entity::new_with_tags(id.clone(), [("name".to_string(), string(name))], [], [])
                        .map_err(|e| format!("secret {name}: {e}"))?;
                (id, entity)
            }
            Resource::Broker => {
                let id = uid(&self.broker, BROKER_ENTITY_ID);
                (id.clone(), Entity::with_uid(id))
            }
        };
        let entities =
            Entities::from_entities([principal_entity, resource_entity], Some(&self.schema))
                .map_err(|e| format!("entities: {e}"))?;
        let cedar_request = Request::new(
            principal,
            uid(&self.action, action.as_str()),
            resource,
            context(request.claims)?,
            Some(&self.schema),
        )
        .map_err(|e| format!("request: {e}"))?;
        Ok((cedar_request, entities))
    }
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_string())
}

/// The request context: `attested`, and `claims` when there are claims.
fn context(claims: Option<&Claims>) -> Result<Context, String> {
    let mut pairs = vec![(
        "attested".to_string(),
        RestrictedExpression::new_bool(claims.is_some()),
    )];
    if let Some(claims) = claims {
        pairs.push(("claims".to_string(), claims_record(claims)?));
    }
    Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
}

/// The name policies compare `context.claims.tee` with.
fn tee_name(tee: TeeKind) -> &'static str {
    match tee {
        TeeKind::SevSnp => "sev-snp",
        TeeKind::Tpm => "tpm",
        TeeKind::InsecureDev => "insecure-dev",
    }
}

/// Claims as the `AttestationClaims` record of the schema. Optional fields are left out
/// when absent; PCRs become a set of `"index=hex"` strings (decimal index, lowercase hex).
fn claims_record(claims: &Claims) -> Result<RestrictedExpression, String> {
    let long = |n: i64| RestrictedExpression::new_long(n);
    let mut fields = vec![
        ("tee".to_string(), string(tee_name(claims.tee))),
        (
            "insecure".to_string(),
            RestrictedExpression::new_bool(claims.insecure),
        ),
    ];
    if let Some(measurement) = &claims.measurement {
        fields.push((
            "measurement".to_string(),
            string(&measurement.to_ascii_lowercase()),
        ));
    }
    if let Some(debug) = claims.debug {
        fields.push(("debug".to_string(), RestrictedExpression::new_bool(debug)));
    }
    if let Some(platform) = &claims.platform {
        fields.push(("platform".to_string(), string(platform)));
    }
    if let Some(vmpl) = claims.vmpl {
        fields.push(("vmpl".to_string(), long(i64::from(vmpl))));
    }
    if let Some(tcb) = &claims.tcb {
        let mut svns = vec![
            ("bootloader".to_string(), long(i64::from(tcb.bootloader))),
            ("tee".to_string(), long(i64::from(tcb.tee))),
            ("snp".to_string(), long(i64::from(tcb.snp))),
            ("microcode".to_string(), long(i64::from(tcb.microcode))),
        ];
        if let Some(fmc) = tcb.fmc {
            svns.push(("fmc".to_string(), long(i64::from(fmc))));
        }
        let record = RestrictedExpression::new_record(svns).map_err(|e| format!("tcb: {e}"))?;
        fields.push(("tcb".to_string(), record));
    }
    if let Some(ak) = &claims.attestation_key {
        fields.push(("attestation_key".to_string(), string(ak)));
    }
    if !claims.pcrs.is_empty() {
        let pcrs = claims
            .pcrs
            .iter()
            .map(|(index, value)| string(&format!("{index}={}", value.to_ascii_lowercase())));
        fields.push(("pcrs".to_string(), RestrictedExpression::new_set(pcrs)));
    }
    RestrictedExpression::new_record(fields).map_err(|e| format!("claims: {e}"))
}
