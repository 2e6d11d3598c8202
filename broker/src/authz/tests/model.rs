//! The model itself: the schema's actions against [`Action`], and the development policy.

use attest::claims::{Claims, TeeKind};

use super::{decide, decide_with, key, snp_claims, tags};
use crate::authz::{Action, Authorizer, DEV_POLICY, Resource, ResourceKind, SCHEMA};

#[test]
fn actions_match_the_schema_and_the_grpc_methods() {
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(SCHEMA).unwrap();
    let mut declared: Vec<String> = schema
        .actions()
        .map(|a| a.id().unescaped().to_string())
        .collect();
    declared.sort();
    let mut expected: Vec<String> = Action::ALL
        .iter()
        .map(|a| a.as_str().to_string())
        .chain(
            [
                "KeyUse",
                "KeyAdmin",
                "KeyRelease",
                "Attestation",
                "Identity",
                "SecretUse",
                "SecretAdmin",
                "Admin",
            ]
            .map(String::from),
        )
        .collect();
    expected.sort();
    assert_eq!(declared, expected);
    assert_eq!(Action::ALL.len(), 48);
    for &action in Action::ALL {
        assert_eq!(Action::from_method(action.as_str()), Some(action));
        let path = format!("/{}/{action}", action.group().grpc_service());
        assert_eq!(Action::from_grpc_path(&path), Some(action), "{path}");
        let uid: cedar_policy::EntityUid =
            format!("Keybroker::Action::\"{action}\"").parse().unwrap();
        let resources: Vec<String> = schema
            .resources_for_action(&uid)
            .unwrap()
            .map(ToString::to_string)
            .collect();
        let expected = match action.resource_kind() {
            ResourceKind::Key => "Keybroker::Key",
            ResourceKind::Secret => "Keybroker::Secret",
            ResourceKind::Broker => "Keybroker::Broker",
        };
        assert_eq!(resources, [expected], "{action}");
        let group: cedar_policy::EntityUid =
            format!("Keybroker::Action::\"{}\"", action.group().as_str())
                .parse()
                .unwrap();
        let actions = schema.action_entities().unwrap();
        let parents: Vec<_> = actions.ancestors(&uid).unwrap().collect();
        assert_eq!(parents, [&group], "{action}");
    }
    assert_eq!(Action::from_method("SignBatch"), Some(Action::Sign));
    assert_eq!(Action::from_method("sign"), None);
    assert_eq!(
        Action::from_grpc_path("/keybroker.v1.AdminService/Sign"),
        None
    );
    assert_eq!(Action::from_grpc_path("Sign"), None);
}

#[test]
fn dev_policy_validates_and_behaves_as_described() {
    let authz = Authorizer::from_text(DEV_POLICY).unwrap();
    assert_eq!(authz.policy().policies, 6);
    let admin = "spiffe://keybroker.dev/admin";
    let workload = "spiffe://keybroker.dev/workload";
    let demo = tags(&[("team", "demo")]);
    let other = tags(&[("team", "other")]);
    let guarded = tags(&[("team", "demo"), ("requires-attestation", "true")]);

    for &action in Action::ALL {
        let resource = match action.resource_kind() {
            ResourceKind::Key => key("k", &other),
            ResourceKind::Secret => Resource::Secret("s"),
            ResourceKind::Broker => Resource::Broker,
        };
        let decision = decide(&authz, admin, action, resource);
        assert!(decision.allowed, "admin {action}");
        assert_eq!(decision.policies, ["dev-admin"]);
    }

    for action in [
        Action::GetKey,
        Action::Sign,
        Action::Verify,
        Action::Encrypt,
        Action::Decrypt,
    ] {
        let decision = decide(&authz, workload, action, key("k", &demo));
        assert!(decision.allowed, "workload {action}");
        assert_eq!(decision.policies, ["dev-workload-use-demo-keys"]);
        assert!(!decide(&authz, workload, action, key("k", &other)).allowed);
    }
    for action in [Action::GetChallenge, Action::Attest, Action::GetJwks] {
        let decision = decide(&authz, workload, action, Resource::Broker);
        assert_eq!(decision.policies, ["dev-workload-attestation"], "{action}");
    }
    // Certificates and workload JWTs only once attested; the trust bundle always.
    let dev_claims = Claims {
        tee: TeeKind::InsecureDev,
        insecure: true,
        ..snp_claims("00")
    };
    for action in [Action::IssueCertificate, Action::GetToken] {
        assert!(
            !decide(&authz, workload, action, Resource::Broker).allowed,
            "{action}"
        );
        let attested = decide_with(
            &authz,
            workload,
            action,
            Resource::Broker,
            Some(&dev_claims),
        );
        assert_eq!(attested.policies, ["dev-workload-identity"], "{action}");
    }
    let bundle = decide(&authz, workload, Action::GetTrustBundle, Resource::Broker);
    assert_eq!(bundle.policies, ["dev-workload-identity"]);
    for action in [Action::CreateKey, Action::RotateKey, Action::DisableKey] {
        assert!(!decide(&authz, workload, action, key("k", &demo)).allowed);
    }
    for action in [Action::ListKeys, Action::SetPolicy, Action::ListBackends] {
        assert!(!decide(&authz, workload, action, Resource::Broker).allowed);
    }
    assert!(
        !decide(
            &authz,
            "spiffe://keybroker.dev/stranger",
            Action::GetJwks,
            Resource::Broker
        )
        .allowed
    );

    // Decrypt on a requires-attestation key: forbidden for everyone until attested.
    for who in [admin, workload] {
        let denied = decide(&authz, who, Action::Decrypt, key("k", &guarded));
        assert!(!denied.allowed, "{who}");
        assert_eq!(denied.policies, ["decrypt-requires-attestation"]);
        let dev_claims = Claims {
            tee: TeeKind::InsecureDev,
            insecure: true,
            ..snp_claims("00")
        };
        let attested = decide_with(
            &authz,
            who,
            Action::Decrypt,
            key("k", &guarded),
            Some(&dev_claims),
        );
        assert!(attested.allowed, "{who}: {attested:?}");
        assert!(decide(&authz, who, Action::Encrypt, key("k", &guarded)).allowed);
    }
}
