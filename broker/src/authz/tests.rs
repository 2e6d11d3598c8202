//! Authorization decisions against small policies; pure logic, no hardware.

use std::collections::BTreeMap;

use attest::claims::{Claims, TcbClaims, TeeKind};

use super::*;
use crate::identity::SpiffeId;

mod docs;
mod loading;
mod model;

pub(super) fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap()
}

pub(super) fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn key<'a>(name: &'a str, tags: &'a BTreeMap<String, String>) -> Resource<'a> {
    Resource::Key(KeyResource {
        name,
        algorithm: "ec-p256",
        purpose: "sign-verify",
        backend: "hsm0",
        state: "enabled",
        tags,
    })
}

/// Decides `action` by `principal` on `resource`, without claims.
pub(super) fn decide(
    authz: &Authorizer,
    principal: &str,
    action: Action,
    resource: Resource<'_>,
) -> Decision {
    decide_with(authz, principal, action, resource, None)
}

pub(super) fn decide_with(
    authz: &Authorizer,
    principal: &str,
    action: Action,
    resource: Resource<'_>,
    claims: Option<&Claims>,
) -> Decision {
    let principal = id(principal);
    authz.authorize(&AuthzRequest {
        principal: &principal,
        action,
        resource,
        claims,
    })
}

pub(super) fn snp_claims(measurement: &str) -> Claims {
    Claims {
        tee: TeeKind::SevSnp,
        insecure: false,
        measurement: Some(measurement.to_string()),
        tcb: Some(TcbClaims {
            bootloader: 10,
            tee: 0,
            snp: 23,
            microcode: 213,
            fmc: None,
        }),
        debug: Some(false),
        vmpl: Some(0),
        platform: Some("genoa/vcek".to_string()),
        attestation_key: None,
        pcrs: BTreeMap::new(),
    }
}

pub(super) const APP: &str = "spiffe://prod.example/ns/payments/sa/api";

#[test]
fn authorizer_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Authorizer>();
}

#[test]
fn empty_policy_denies_everything() {
    let authz = Authorizer::from_text("").unwrap();
    assert_eq!(authz.policy().policies, 0);
    let no_tags = tags(&[]);
    for &action in Action::ALL {
        let resource = match action.resource_kind() {
            ResourceKind::Key => key("k", &no_tags),
            ResourceKind::Secret => Resource::Secret("s"),
            ResourceKind::Broker => Resource::Broker,
        };
        let decision = decide(&authz, APP, action, resource);
        assert_eq!(decision, Decision::default(), "{action}");
    }
}

#[test]
fn permit_by_principal() {
    let authz = Authorizer::from_text(&format!(
        r#"@id("api-signs") permit (principal == Keybroker::Workload::"{APP}",
                                    action == Keybroker::Action::"Sign", resource);"#
    ))
    .unwrap();
    let no_tags = tags(&[]);
    let decision = decide(&authz, APP, Action::Sign, key("k", &no_tags));
    assert!(decision.allowed);
    assert_eq!(decision.policies, ["api-signs"]);
    assert!(
        !decide(
            &authz,
            "spiffe://prod.example/other",
            Action::Sign,
            key("k", &no_tags)
        )
        .allowed
    );
    assert!(!decide(&authz, APP, Action::Decrypt, key("k", &no_tags)).allowed);
}

#[test]
fn permit_by_action_group() {
    let authz = Authorizer::from_text(
        r#"permit (principal, action in Keybroker::Action::"KeyUse", resource);"#,
    )
    .unwrap();
    let no_tags = tags(&[]);
    for action in [
        Action::GetKey,
        Action::Sign,
        Action::Decrypt,
        Action::GenerateDataKey,
    ] {
        let decision = decide(&authz, APP, action, key("k", &no_tags));
        assert!(decision.allowed, "{action}");
        assert_eq!(decision.policies, ["policy0"]);
    }
    assert!(!decide(&authz, APP, Action::RotateKey, key("k", &no_tags)).allowed);
    assert!(!decide(&authz, APP, Action::CreateKey, key("k", &no_tags)).allowed);
    assert!(!decide(&authz, APP, Action::ListKeys, Resource::Broker).allowed);
}

#[test]
fn permit_by_key_tag_and_attributes() {
    let authz = Authorizer::from_text(
        r#"@id("payments-keys")
        permit (principal, action in Keybroker::Action::"KeyUse", resource is Keybroker::Key)
        when { resource.hasTag("team") && resource.getTag("team") == "payments" };

        @id("creators")
        permit (principal, action == Keybroker::Action::"CreateKey", resource)
        when { resource.state == "creating" && resource.algorithm like "ec-*" &&
               resource.backend == "hsm0" };"#,
    )
    .unwrap();
    let payments = tags(&[("team", "payments"), ("env", "prod")]);
    let other = tags(&[("team", "risk")]);
    let none = tags(&[]);
    assert_eq!(
        decide(&authz, APP, Action::Sign, key("k", &payments)).policies,
        ["payments-keys"]
    );
    assert!(!decide(&authz, APP, Action::Sign, key("k", &other)).allowed);
    assert!(!decide(&authz, APP, Action::Sign, key("k", &none)).allowed);

    let mut new_key = KeyResource {
        name: "new",
        algorithm: "ec-p384",
        purpose: "sign-verify",
        backend: "hsm0",
        state: "creating",
        tags: &none,
    };
    assert!(decide(&authz, APP, Action::CreateKey, Resource::Key(new_key)).allowed);
    new_key.algorithm = "rsa-2048";
    assert!(!decide(&authz, APP, Action::CreateKey, Resource::Key(new_key)).allowed);
}

#[test]
fn permit_by_trust_domain() {
    let authz = Authorizer::from_text(
        r#"permit (principal, action in Keybroker::Action::"Attestation", resource)
        when { principal.trust_domain == "prod.example" && principal.path like "/ns/*" };"#,
    )
    .unwrap();
    assert!(decide(&authz, APP, Action::GetChallenge, Resource::Broker).allowed);
    assert!(decide(&authz, APP, Action::Attest, Resource::Broker).allowed);
    assert!(
        !decide(
            &authz,
            "spiffe://dev.example/ns/x",
            Action::Attest,
            Resource::Broker
        )
        .allowed
    );
    assert!(
        !decide(
            &authz,
            "spiffe://prod.example/other",
            Action::Attest,
            Resource::Broker
        )
        .allowed
    );
}

#[test]
fn forbid_overrides_permit_and_is_named() {
    let authz = Authorizer::from_text(
        r#"@id("all") permit (principal, action, resource);
        @id("no-destroy") forbid (principal,
            action == Keybroker::Action::"ScheduleKeyDestruction", resource)
        unless { resource.hasTag("disposable") };"#,
    )
    .unwrap();
    let none = tags(&[]);
    let denied = decide(&authz, APP, Action::ScheduleKeyDestruction, key("k", &none));
    assert!(!denied.allowed);
    assert_eq!(denied.policies, ["no-destroy"]);
    assert!(denied.errors.is_empty());
    let disposable = tags(&[("disposable", "yes")]);
    let allowed = decide(
        &authz,
        APP,
        Action::ScheduleKeyDestruction,
        key("k", &disposable),
    );
    assert_eq!(allowed.policies, ["all"]);
    assert!(allowed.allowed);
}

#[test]
fn claims_in_context_permit_what_is_denied_without_them() {
    let measurement = "a1".repeat(48);
    let authz = Authorizer::from_text(&format!(
        r#"@id("snp-decrypt")
        permit (principal, action == Keybroker::Action::"Decrypt", resource)
        when {{ context.attested && context has claims && context.claims.tee == "sev-snp" &&
               !context.claims.insecure &&
               context.claims has measurement && context.claims.measurement == "{measurement}" &&
               context.claims has tcb && context.claims.tcb.snp >= 22 &&
               context.claims has debug && !context.claims.debug }};"#
    ))
    .unwrap();
    let none = tags(&[]);
    let without = decide(&authz, APP, Action::Decrypt, key("k", &none));
    assert!(!without.allowed);
    assert!(without.errors.is_empty(), "{:?}", without.errors);

    // Upper-case hex in the claims still matches: measurements are lowercased.
    let claims = snp_claims(&measurement.to_uppercase());
    let with = decide_with(&authz, APP, Action::Decrypt, key("k", &none), Some(&claims));
    assert!(with.allowed, "{with:?}");
    assert_eq!(with.policies, ["snp-decrypt"]);

    let other = snp_claims(&"b2".repeat(48));
    assert!(!decide_with(&authz, APP, Action::Decrypt, key("k", &none), Some(&other)).allowed);
}

#[test]
fn pcrs_are_a_set_of_index_equals_hex_strings_and_the_ak_has_its_label() {
    let pcr7 = "3d".repeat(32);
    let authz = Authorizer::from_text(&format!(
        r#"permit (principal, action == Keybroker::Action::"Sign", resource)
        when {{ context has claims && context.claims.tee == "tpm" &&
               context.claims has attestation_key &&
               context.claims.attestation_key == "rack1-host7" &&
               context.claims has pcrs &&
               context.claims.pcrs.containsAll(["0={zero}", "7={pcr7}"]) }};"#,
        zero = "00".repeat(32)
    ))
    .unwrap();
    let claims = Claims {
        tee: TeeKind::Tpm,
        insecure: false,
        measurement: None,
        tcb: None,
        debug: None,
        vmpl: None,
        platform: None,
        attestation_key: Some("rack1-host7".to_string()),
        pcrs: BTreeMap::from([
            (0, "00".repeat(32)),
            (7, pcr7.to_uppercase()),
            (14, "ff".repeat(32)),
        ]),
    };
    let none = tags(&[]);
    assert!(decide_with(&authz, APP, Action::Sign, key("k", &none), Some(&claims)).allowed);
    let mut changed = claims.clone();
    changed.pcrs.insert(7, "00".repeat(32));
    assert!(!decide_with(&authz, APP, Action::Sign, key("k", &none), Some(&changed)).allowed);
    let mut other_host = claims.clone();
    other_host.attestation_key = Some("rack2-host1".to_string());
    assert!(
        !decide_with(
            &authz,
            APP,
            Action::Sign,
            key("k", &none),
            Some(&other_host)
        )
        .allowed
    );
    let mut none_at_all = claims;
    none_at_all.pcrs.clear();
    let decision = decide_with(
        &authz,
        APP,
        Action::Sign,
        key("k", &none),
        Some(&none_at_all),
    );
    assert!(!decision.allowed);
    assert!(decision.errors.is_empty());
}

#[test]
fn evaluation_errors_deny_even_when_a_permit_matches() {
    // vmpl + i64::MAX overflows for any vmpl >= 1: the forbid cannot be evaluated.
    let authz = Authorizer::from_text(
        r#"@id("all") permit (principal, action, resource);
        @id("overflows") forbid (principal, action, resource)
        when { context has claims && context.claims has vmpl &&
               context.claims.vmpl + 9223372036854775807 < 0 };"#,
    )
    .unwrap();
    let mut claims = snp_claims("aa");
    claims.vmpl = Some(1);
    let decision = decide_with(
        &authz,
        APP,
        Action::GetJwks,
        Resource::Broker,
        Some(&claims),
    );
    assert!(!decision.allowed);
    assert_eq!(decision.policies, ["overflows"]);
    assert_eq!(decision.errors.len(), 1);
    assert!(
        decision.errors[0].contains("overflows"),
        "{:?}",
        decision.errors
    );
    claims.vmpl = Some(0);
    assert!(
        decide_with(
            &authz,
            APP,
            Action::GetJwks,
            Resource::Broker,
            Some(&claims)
        )
        .allowed
    );
}

#[test]
fn a_resource_of_the_wrong_kind_is_denied_with_an_error() {
    let authz = Authorizer::from_text("permit (principal, action, resource);").unwrap();
    let decision = decide(&authz, APP, Action::Sign, Resource::Broker);
    assert!(!decision.allowed);
    assert_eq!(decision.errors, ["Sign acts on a Key, not a Broker"]);
    let none = tags(&[]);
    assert!(!decide(&authz, APP, Action::ListKeys, key("k", &none)).allowed);
}
