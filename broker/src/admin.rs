//! `AdminService`: backends and the authorization policy, for operators.
//!
//! Registering a backend opens it first (so a wrong PIN or module fails the call and
//! changes nothing), then records it, then puts it in service. Setting the policy validates
//! it first, then stores it, then swaps it in atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keybroker_api::v1 as pb;
use pb::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::authz::{Action, Authorizer, AuthzRequest, PolicyInfo, Resource, ResourceKind};
use crate::backends::NamedBackend;
use crate::config::{Config, check_name};
use crate::error::BrokerError;
use crate::identity::SpiffeId;
use crate::keys::{KeyManager, absent_resource, key_resource};
use crate::request::Gate;
use crate::store::BackendRecord;

/// Serves `AdminService`.
#[derive(Debug, Clone)]
pub struct AdminServiceImpl {
    config: Arc<Config>,
    keys: Arc<KeyManager>,
    authorizer: Arc<Authorizer>,
    gate: Gate,
}

type Reply<T> = Result<Response<T>, Status>;

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

fn policy_to_wire(info: &PolicyInfo) -> pb::Policy {
    pb::Policy {
        text: info.text.clone(),
        digest: info.digest_hex.clone(),
        policies: u32::try_from(info.policies).unwrap_or(u32::MAX),
    }
}

fn policy_error(e: crate::authz::AuthzError) -> Status {
    match e {
        crate::authz::AuthzError::NotAuthorized(_) => Status::internal("internal error"),
        other => invalid(other.to_string()),
    }
}

impl AdminServiceImpl {
    pub fn new(
        config: Arc<Config>,
        keys: Arc<KeyManager>,
        authorizer: Arc<Authorizer>,
        gate: Gate,
    ) -> Self {
        AdminServiceImpl {
            config,
            keys,
            authorizer,
            gate,
        }
    }
}

/// A backend as the API shows it.
fn backend_to_wire(backend: &NamedBackend, keys: u32) -> pb::Backend {
    pb::Backend {
        name: backend.name.clone(),
        kind: backend.kind().to_string(),
        description: backend.describe(),
        available: backend.available(),
        keys,
    }
}

/// The non-empty string field, or `None`.
fn given(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn register_hsm_backend(
        &self,
        request: Request<pb::RegisterHsmBackendRequest>,
    ) -> Reply<pb::Backend> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let r = request.into_inner();
        check_name(&r.name).map_err(|reason| invalid(format!("name: {reason}")))?;
        let module = PathBuf::from(&r.module_path);
        if !self.config.module_allowed(&module) {
            return Err(Status::failed_precondition(
                "module_path: not a PKCS#11 module this broker may load (see admin.pkcs11_modules)",
            ));
        }
        if r.token_label.is_empty() {
            return Err(invalid("token_label: required"));
        }
        let (pin_file, pin_env) = (given(&r.user_pin_file), given(&r.user_pin_env));
        if pin_file.is_some() == pin_env.is_some() {
            return Err(invalid(
                "give exactly one of user_pin_file and user_pin_env",
            ));
        }
        if pin_file
            .as_deref()
            .is_some_and(|f| Path::new(f).is_relative())
        {
            return Err(invalid("user_pin_file: must be an absolute path"));
        }
        let record = BackendRecord::Hsm {
            name: r.name,
            module_path: r.module_path,
            token_label: r.token_label,
            user_pin_file: pin_file,
            user_pin_env: pin_env,
        };
        let opened = self.keys.register_backend(&auth, record).await?;
        Ok(Response::new(backend_to_wire(&opened, 0)))
    }

    async fn register_tpm_backend(
        &self,
        request: Request<pb::RegisterTpmBackendRequest>,
    ) -> Reply<pb::Backend> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let r = request.into_inner();
        check_name(&r.name).map_err(|reason| invalid(format!("name: {reason}")))?;
        let record = BackendRecord::Tpm {
            name: r.name,
            tcti: r.tcti,
        };
        let opened = self.keys.register_backend(&auth, record).await?;
        Ok(Response::new(backend_to_wire(&opened, 0)))
    }

    async fn list_backends(
        &self,
        request: Request<pb::ListBackendsRequest>,
    ) -> Reply<pb::ListBackendsResponse> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let counts = self.keys.key_counts(&auth).await?;
        let count = |name: &str| {
            counts
                .get(name)
                .map_or(0, |n| u32::try_from(*n).unwrap_or(u32::MAX))
        };
        let backends = self
            .keys
            .backends()
            .all()
            .iter()
            .map(|b| backend_to_wire(b, count(&b.name)))
            .collect();
        Ok(Response::new(pb::ListBackendsResponse { backends }))
    }

    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Reply<pb::Policy> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let info = self.authorizer.policy_for(&auth).map_err(policy_error)?;
        Ok(Response::new(policy_to_wire(&info)))
    }

    async fn set_policy(&self, request: Request<pb::SetPolicyRequest>) -> Reply<pb::Policy> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        if !self.authorizer.files().is_empty() {
            return Err(Status::failed_precondition(
                "the policy is loaded from files (policy.files): edit them and reload",
            ));
        }
        let text = request.into_inner().text;
        // Validate before storing, store before swapping: what is in force is what a
        // restart loads.
        Authorizer::from_text(&text).map_err(policy_error)?;
        self.keys.store_policy(&auth, &text).await?;
        let info = self
            .authorizer
            .set_policy(&auth, &text)
            .map_err(policy_error)?;
        tracing::info!(caller = %auth.caller(), digest = %info.digest_hex, policies = info.policies, "policy set");
        Ok(Response::new(policy_to_wire(&info)))
    }

    async fn reload_policy(&self, request: Request<pb::ReloadPolicyRequest>) -> Reply<pb::Policy> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        if self.authorizer.files().is_empty() {
            return Err(Status::failed_precondition(
                "the policy is not loaded from files: set it with SetPolicy",
            ));
        }
        let info = self
            .authorizer
            .reload(&auth)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        tracing::info!(caller = %auth.caller(), digest = %info.digest_hex, policies = info.policies, "policy reloaded");
        Ok(Response::new(policy_to_wire(&info)))
    }

    async fn explain_decision(
        &self,
        request: Request<pb::ExplainDecisionRequest>,
    ) -> Reply<pb::Decision> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let r = request.into_inner();
        let principal =
            SpiffeId::parse(&r.principal).map_err(|e| invalid(format!("principal: {e}")))?;
        let action = Action::from_method(&r.action)
            .ok_or_else(|| invalid(format!("action: {:?} is not an action", r.action)))?;
        let no_tags = BTreeMap::new();
        let key = match action.resource_kind() {
            ResourceKind::Broker => None,
            ResourceKind::Secret if r.secret.is_empty() => {
                return Err(invalid("secret: required for this action"));
            }
            ResourceKind::Secret => None,
            ResourceKind::Key if r.key.is_empty() => {
                return Err(invalid("key: required for this action"));
            }
            ResourceKind::Key => match self.keys.get(&r.key).await {
                Ok(key) => Some(key),
                Err(BrokerError::KeyNotFound(_)) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let resource = match (action.resource_kind(), &key) {
            (ResourceKind::Broker, _) => Resource::Broker,
            (ResourceKind::Secret, _) => Resource::Secret(&r.secret),
            (_, Some(key)) => key_resource(key),
            (_, None) => absent_resource(&r.key, &no_tags),
        };
        let decision = self
            .authorizer
            .explain(
                &auth,
                &AuthzRequest {
                    principal: &principal,
                    action,
                    resource,
                    claims: None,
                },
            )
            .map_err(policy_error)?;
        Ok(Response::new(pb::Decision {
            allowed: decision.allowed,
            policies: decision.policies,
            errors: decision.errors,
        }))
    }
}
