//! The actions: one per authorized gRPC method, named exactly like it.

use std::fmt;

/// What an action acts on: the request's resource entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A `Keybroker::Key`, named by the key name.
    Key,
    /// A `Keybroker::Secret`, named by the secret name.
    Secret,
    /// The single `Keybroker::Broker::"broker"`.
    Broker,
}

/// The action group an action belongs to (`action in Keybroker::Action::"KeyUse"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionGroup {
    /// Using a key: GetKey, GetPublicKey, Sign, Verify, Encrypt, Decrypt, GenerateDataKey,
    /// and sealing: Seal, Unseal, SealStream, UnsealStream, GenerateDataKeyWithoutPlaintext,
    /// Rewrap.
    KeyUse,
    /// Managing keys: CreateKey, the lifecycle calls, ListKeys.
    KeyAdmin,
    /// ReleaseKey: a releasable key's material, to an attested workload. A group of its
    /// own, so that no policy that allows `KeyUse` lets a key leave.
    KeyRelease,
    /// GetChallenge, Attest, GetJwks.
    Attestation,
    /// IssueCertificate, GetTrustBundle, GetToken.
    Identity,
    /// GetSecret; GenerateSecret, and renewing and revoking one's own leases.
    SecretUse,
    /// Putting, rotating, listing, deleting, disabling and enabling secrets; listing
    /// leases and revoking a role's.
    SecretAdmin,
    /// Backends and the authorization policy itself.
    Admin,
}

impl ActionGroup {
    /// The group's action id in the schema, like `"KeyUse"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionGroup::KeyUse => "KeyUse",
            ActionGroup::KeyAdmin => "KeyAdmin",
            ActionGroup::KeyRelease => "KeyRelease",
            ActionGroup::Attestation => "Attestation",
            ActionGroup::Identity => "Identity",
            ActionGroup::SecretUse => "SecretUse",
            ActionGroup::SecretAdmin => "SecretAdmin",
            ActionGroup::Admin => "Admin",
        }
    }

    /// The gRPC service (`package.Service`) whose methods are in this group.
    pub fn grpc_service(self) -> &'static str {
        match self {
            ActionGroup::KeyUse | ActionGroup::KeyAdmin | ActionGroup::KeyRelease => {
                "keybroker.v1.KeyService"
            }
            ActionGroup::Attestation => "keybroker.v1.AttestationService",
            ActionGroup::Identity => "keybroker.v1.IdentityService",
            ActionGroup::SecretUse | ActionGroup::SecretAdmin => "keybroker.v1.SecretService",
            ActionGroup::Admin => "keybroker.v1.AdminService",
        }
    }
}

macro_rules! actions {
    ($($name:ident: $kind:ident, $group:ident;)*) => {
        /// A gRPC call to authorize; the Cedar action `Keybroker::Action::"<name>"`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action {
            $(
                #[doc = concat!("`", stringify!($name), "`, on a ", stringify!($kind),
                    ", in the ", stringify!($group), " group.")]
                $name,
            )*
        }

        impl Action {
            /// Every action, in schema order.
            pub const ALL: &'static [Action] = &[$(Action::$name),*];

            /// The action's name: the gRPC method name and the Cedar action id.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$name => stringify!($name),)*
                }
            }

            /// What the action acts on.
            pub fn resource_kind(self) -> ResourceKind {
                match self {
                    $(Action::$name => ResourceKind::$kind,)*
                }
            }

            /// The group it belongs to.
            pub fn group(self) -> ActionGroup {
                match self {
                    $(Action::$name => ActionGroup::$group,)*
                }
            }

            /// The action for a gRPC method name, like `"Sign"`.
            ///
            /// `"SignBatch"` (many digests under one key) is authorized as
            /// [`Action::Sign`]. Unknown names give `None`: the caller should deny.
            pub fn from_method(method: &str) -> Option<Action> {
                match method {
                    $(stringify!($name) => Some(Action::$name),)*
                    "SignBatch" => Some(Action::Sign),
                    _ => None,
                }
            }
        }
    };
}

actions! {
    CreateKey: Key, KeyAdmin;
    GetKey: Key, KeyUse;
    GetPublicKey: Key, KeyUse;
    Sign: Key, KeyUse;
    Verify: Key, KeyUse;
    Encrypt: Key, KeyUse;
    Decrypt: Key, KeyUse;
    GenerateDataKey: Key, KeyUse;
    Seal: Key, KeyUse;
    Unseal: Key, KeyUse;
    SealStream: Key, KeyUse;
    UnsealStream: Key, KeyUse;
    GenerateDataKeyWithoutPlaintext: Key, KeyUse;
    Rewrap: Key, KeyUse;
    RotateKey: Key, KeyAdmin;
    DisableKey: Key, KeyAdmin;
    EnableKey: Key, KeyAdmin;
    RevokeKey: Key, KeyAdmin;
    RetireKeyVersion: Key, KeyAdmin;
    ScheduleKeyDestruction: Key, KeyAdmin;
    CancelKeyDestruction: Key, KeyAdmin;
    ReleaseKey: Key, KeyRelease;
    ListKeys: Broker, KeyAdmin;
    GetChallenge: Broker, Attestation;
    Attest: Broker, Attestation;
    GetJwks: Broker, Attestation;
    IssueCertificate: Broker, Identity;
    GetTrustBundle: Broker, Identity;
    GetToken: Broker, Identity;
    GetSecret: Secret, SecretUse;
    PutSecret: Secret, SecretAdmin;
    RotateSecret: Secret, SecretAdmin;
    DeleteSecret: Secret, SecretAdmin;
    DisableSecretVersion: Secret, SecretAdmin;
    EnableSecretVersion: Secret, SecretAdmin;
    ListSecrets: Broker, SecretAdmin;
    GenerateSecret: Secret, SecretUse;
    RenewLease: Secret, SecretUse;
    RevokeLease: Secret, SecretUse;
    RevokeLeases: Secret, SecretAdmin;
    ListLeases: Broker, SecretAdmin;
    RegisterHsmBackend: Broker, Admin;
    RegisterTpmBackend: Broker, Admin;
    ListBackends: Broker, Admin;
    GetPolicy: Broker, Admin;
    SetPolicy: Broker, Admin;
    ReloadPolicy: Broker, Admin;
    ExplainDecision: Broker, Admin;
}

impl Action {
    /// The action for a full gRPC path, like `"/keybroker.v1.KeyService/Sign"`, as seen
    /// by a server interceptor. The service must be the one that serves the method.
    pub fn from_grpc_path(path: &str) -> Option<Action> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let action = Action::from_method(method)?;
        (action.group().grpc_service() == service).then_some(action)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
