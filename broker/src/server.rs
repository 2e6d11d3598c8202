//! `keybroker serve`: opens the store and the hardware, reconciles them, and serves the
//! API over mutual TLS until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keybroker_api::v1::admin_service_server::AdminServiceServer;
use keybroker_api::v1::attestation_service_server::AttestationServiceServer;
use keybroker_api::v1::identity_service_server::IdentityServiceServer;
use keybroker_api::v1::key_service_server::KeyServiceServer;
use keybroker_api::v1::secret_service_server::SecretServiceServer;
use tokio::net::TcpListener;

mod background;

use background::{spawn_crl_reloader, spawn_destroyer, spawn_lease_sweeper, spawn_policy_reloader};

use crate::admin::AdminServiceImpl;
use crate::attestation::{Attestation, AttestationServiceImpl};
use crate::authz::Authorizer;
use crate::backends::{self, Backends};
use crate::ca::IdentityServiceImpl;
use crate::config::Config;
use crate::error::BrokerError;
use crate::keys::{KeyManager, KeyServiceImpl, Listings};
use crate::request::{ClaimsSource, Gate};
use crate::secrets::SecretServiceImpl;
use crate::store::KeyStore;
use crate::store::sqlite::SqliteStore;
use crate::tls::{ClientAuthOptions, ConnectionLimits, ServerTls, TlsIncoming};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Setup(String),
    #[error("transport: {0}")]
    Transport(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ServeError + '_ {
    move |e| ServeError::Setup(format!("{what}: {e}"))
}

/// Everything the services share.
#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub store: Arc<dyn KeyStore>,
    pub backends: Arc<Backends>,
    pub authorizer: Arc<Authorizer>,
    pub keys: Arc<KeyManager>,
    /// `None` without an HSM to hold the token key.
    pub attestation: Option<Arc<Attestation>>,
    /// The workload CA; `None` without `[ca] backend`.
    pub authority: Option<Arc<crate::ca::Authority>>,
    /// `None` without `[secrets]`.
    pub secrets: Option<Arc<crate::secrets::Secrets>>,
    /// The dynamic roles and their leases; `None` without `[secrets]`.
    pub leases: Option<Arc<crate::secrets::Leases>>,
}

impl Broker {
    /// Opens the store and every backend (blocking: PKCS#11 login, TPM start-up).
    ///
    /// # Errors
    /// Any of them cannot be opened; the message names which.
    pub fn open(config: Config) -> Result<Broker, ServeError> {
        let sqlite = SqliteStore::open(&config.store.path).map_err(setup("store"))?;
        let backends = Arc::new(open_configured(&config, None)?);
        // The store key first: until it is unwrapped, the store reads no row.
        let protect_with = config.store.protect_with.as_deref();
        tokio::runtime::Handle::current()
            .block_on(crate::store_key::open(
                &sqlite,
                &backends,
                protect_with,
                config.keys.orphan_all_existing_keys,
            ))
            .map_err(setup("store"))?;
        let store: Arc<dyn KeyStore> = Arc::new(sqlite);
        // Keys reference their backend in the store: record the configured ones too.
        for record in configured_backends(&config) {
            match store.add_backend(&record).wait() {
                Ok(()) | Err(crate::store::StoreError::BackendExists(_)) => {}
                Err(e) => return Err(setup("store")(e)),
            }
        }
        for record in store.backends().wait().map_err(setup("store"))? {
            if backends.get(record.name()).is_ok() {
                continue;
            }
            let opened = backends::open_record(&record).map_err(setup("registered backend"))?;
            backends
                .insert(opened)
                .map_err(setup("registered backend"))?;
        }
        let authorizer = Arc::new(load_policy(&config, store.as_ref())?);
        let keys = Arc::new(KeyManager::new(
            store.clone(),
            backends.clone(),
            config.keys.clone(),
        ));
        let attestation = Attestation::open(&config.attestation, &backends)
            .map_err(setup("attestation"))?
            .map(Arc::new);
        let authority =
            crate::ca::open(&config.ca, &backends, store.clone()).map_err(setup("ca"))?;
        let secrets = crate::secrets::open(&config.secrets, &backends, store.clone())
            .map_err(setup("secrets"))?;
        let leases = secrets.as_ref().map(|secrets| {
            Arc::new(crate::secrets::Leases::new(
                &config.secrets,
                secrets.clone(),
                store.clone(),
            ))
        });
        Ok(Broker {
            config,
            store,
            backends,
            authorizer,
            keys,
            attestation,
            authority,
            secrets,
            leases,
        })
    }
}

/// Opens the configured `[[hsm]]` and `[[tpm]]` backends (blocking: PKCS#11 login, TPM
/// start-up); with `only`, just that one.
///
/// # Errors
/// One cannot be opened; the message names which.
pub fn open_configured(config: &Config, only: Option<&str>) -> Result<Backends, ServeError> {
    let wanted = |name: &str| only.is_none_or(|only| only == name);
    let backends = Backends::default();
    for hsm in config.hsm.iter().filter(|h| wanted(&h.name)) {
        let pin = backends::read_pin(hsm.user_pin_file.as_deref(), hsm.user_pin_env.as_deref())
            .map_err(|e| ServeError::Setup(format!("hsm {:?}: {e}", hsm.name)))?;
        let opened =
            backends::open_hsm(&hsm.name, &hsm.module, &hsm.token_label, pin, hsm.sessions)
                .map_err(setup("hsm"))?;
        backends.insert(opened).map_err(setup("hsm"))?;
    }
    for tpm in config.tpm.iter().filter(|t| wanted(&t.name)) {
        let auths = tpm_backend::HierarchyAuths {
            owner: tpm
                .owner_auth_file
                .as_deref()
                .map(backends::read_tpm_auth)
                .transpose()?,
            endorsement: (tpm.endorsement_auth_file.as_deref())
                .map(backends::read_tpm_auth)
                .transpose()?,
            lockout: None,
        };
        let deadline = Duration::from_secs(tpm.command_timeout_seconds);
        let opened = backends::open_tpm_with(&tpm.name, &tpm.tcti, auths, deadline, &tpm.seal_pcrs)
            .map_err(setup("tpm"))?;
        backends.insert(opened).map_err(setup("tpm"))?;
    }
    Ok(backends)
}

fn configured_backends(config: &Config) -> Vec<crate::store::BackendRecord> {
    use crate::store::BackendRecord;
    let path = |p: &std::path::Path| p.display().to_string();
    let hsm = config.hsm.iter().map(|h| BackendRecord::Hsm {
        name: h.name.clone(),
        module_path: path(&h.module),
        token_label: h.token_label.clone(),
        user_pin_file: h.user_pin_file.as_deref().map(path),
        user_pin_env: h.user_pin_env.clone(),
    });
    let tpm = config.tpm.iter().map(|t| BackendRecord::Tpm {
        name: t.name.clone(),
        tcti: t.tcti.clone(),
    });
    hsm.chain(tpm).collect()
}

/// Policy files from the configuration; else the policy last set through the API; else
/// the bootstrap policy, which is stored; else an empty policy, which denies everything.
fn load_policy(config: &Config, store: &dyn KeyStore) -> Result<Authorizer, ServeError> {
    if !config.policy.files.is_empty() {
        return Authorizer::from_files(&config.policy.files).map_err(setup("policy"));
    }
    if let Some(text) = store.policy().wait().map_err(setup("store"))? {
        return Authorizer::from_text(&text).map_err(setup("stored policy"));
    }
    let Some(bootstrap) = &config.policy.bootstrap else {
        tracing::warn!("no policy: every call is denied until one is configured");
        return Authorizer::from_text("").map_err(setup("policy"));
    };
    let authorizer = Authorizer::from_files(std::slice::from_ref(bootstrap))
        .map_err(setup("policy.bootstrap"))?;
    // Stored as text, so that it is a store-managed policy from now on.
    let text = authorizer.policy().text;
    store.set_policy(&text).wait().map_err(setup("store"))?;
    tracing::info!(file = %bootstrap.display(), "bootstrap policy stored");
    Authorizer::from_text(&text).map_err(setup("policy.bootstrap"))
}

/// Serves until `shutdown` completes.
///
/// # Errors
/// Start-up failures ([`ServeError::Setup`]) or a transport failure.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = std::time::Instant::now();
    crate::tls::install_crypto_provider();
    let tls = ServerTls::from_files_with(
        &config.server.cert,
        &config.server.key,
        &config.server.client_ca,
        &ClientAuthOptions {
            allow_intermediates: config.server.allow_client_intermediates,
            crl_files: config.server.client_crls.clone(),
        },
    )
    .map_err(setup("tls"))?;
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .map_err(setup("start-up"))??;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis(),
        "store and hardware opened"
    );
    let mut listed = Listings::new();
    let scan_later = broker
        .keys
        .reconcile_before_serving(started, &mut listed)
        .await
        .map_err(setup("reconciliation"))?;
    spawn_destroyer(broker.keys.clone());
    if let Some(leases) = &broker.leases {
        spawn_lease_sweeper(
            leases.clone(),
            Duration::from_secs(broker.config.secrets.lease_sweep_seconds),
        );
    }
    spawn_policy_reloader(broker.authorizer.clone());
    spawn_crl_reloader(tls.clone());

    let server = &broker.config.server;
    let listener = TcpListener::bind(server.listen)
        .await
        .map_err(setup("listen"))?;
    let local = listener.local_addr().map_err(setup("listen"))?;
    let incoming = TlsIncoming::new(
        listener,
        &tls,
        ConnectionLimits {
            max_connections: server.max_connections,
            max_handshakes: server.max_handshakes,
            max_handshakes_per_address: server.max_handshakes_per_address,
            handshake_timeout: server.handshake_timeout(),
            idle_timeout: server.idle_timeout(),
        },
    );
    let claims = broker
        .attestation
        .clone()
        .map(|a| a as Arc<dyn ClaimsSource>);
    let gate = Gate::new(
        broker.authorizer.clone(),
        claims,
        server.max_concurrent_requests,
    );
    let max = server.max_message_bytes;
    let keys = KeyServiceServer::new(KeyServiceImpl::new(
        broker.keys.clone(),
        gate.clone(),
        max,
        server.request_timeout(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let attestation = AttestationServiceServer::new(AttestationServiceImpl::new(
        broker.attestation.clone(),
        broker.authority.clone(),
        gate.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let admin = AdminServiceServer::new(AdminServiceImpl::new(
        Arc::new(broker.config.clone()),
        broker.keys.clone(),
        broker.authorizer.clone(),
        gate.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let identity = IdentityServiceServer::new(IdentityServiceImpl::new(
        broker.authority.clone(),
        broker.attestation.clone(),
        broker.config.oidc.clone(),
        gate.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let secrets = SecretServiceServer::new(SecretServiceImpl::new(
        broker.secrets.clone(),
        broker.leases.clone(),
        gate.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    if let Some(authority) = &broker.authority {
        crate::ca::spawn_anchor_updates(authority, tls.clone());
        authority.clone().spawn();
    }
    if let Some(listen) = broker.config.oidc.listen {
        crate::oidc::spawn(listen, &broker.config, broker.attestation.clone())
            .await
            .map_err(setup("oidc"))?;
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<KeyServiceServer<KeyServiceImpl>>()
        .await;
    if broker.attestation.is_some() {
        // Until its token keys are found (`crate::start::finish_start`).
        health
            .set_not_serving::<AttestationServiceServer<AttestationServiceImpl>>()
            .await;
    } else {
        health
            .set_serving::<AttestationServiceServer<AttestationServiceImpl>>()
            .await;
    }
    health
        .set_serving::<AdminServiceServer<AdminServiceImpl>>()
        .await;
    // Serving while the CA loads: its calls wait a little, then answer UNAVAILABLE.
    health
        .set_serving::<IdentityServiceServer<IdentityServiceImpl>>()
        .await;
    health
        .set_serving::<SecretServiceServer<SecretServiceImpl>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keybroker_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(setup("reflection"))?;

    // Printed for scripts and tests that wait for readiness.
    println!("keybroker: listening on {local}");
    tracing::info!(%local, elapsed_ms = started.elapsed().as_millis(), "serving");
    tokio::spawn(crate::start::finish_start(
        broker.keys.clone(),
        broker.attestation.clone(),
        health,
        (listed, scan_later),
        started,
    ));
    tonic::transport::Server::builder()
        .timeout(server.request_timeout())
        .max_concurrent_streams(server.max_concurrent_streams)
        .http2_keepalive_interval(Some(server.keepalive_interval()))
        .http2_keepalive_timeout(Some(server.keepalive_timeout()))
        .max_connection_age(server.max_connection_age())
        .max_connection_age_grace(server.request_timeout())
        .layer(crate::request::stack(server.max_calls_per_identity))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(keys)
        .add_service(attestation)
        .add_service(identity)
        .add_service(secrets)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))
}

impl From<BrokerError> for ServeError {
    fn from(e: BrokerError) -> Self {
        ServeError::Setup(e.to_string())
    }
}
