//! The follow-on authorization: only the pairs of `FOLLOW_ONS`, and only as the policy
//! decides with the claims given. Pure logic: the dev policy, no hardware.

use std::sync::Arc;

use attest::claims::Claims;
use attest::dev::InsecureDevEvidence;

use super::*;
use crate::authz::DEV_POLICY;

const WORKLOAD: &str = "spiffe://keybroker.dev/workload";

fn gate() -> Gate {
    let authorizer = Authorizer::from_text(DEV_POLICY).unwrap_or_else(|e| panic!("{e}"));
    Gate::new(Arc::new(authorizer), None, 8)
}

/// The claims of development evidence, as the appraiser makes them.
fn claims() -> Claims {
    let evidence = InsecureDevEvidence {
        report_data: [0; 64],
        measurement: [0; 48],
    };
    attest::dev::appraise(&evidence, &[0; 64], true).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn attest_may_go_on_to_issue_a_certificate_as_the_policy_allows() {
    let first = Authorized::for_tests(WORKLOAD, Action::Attest, AuthorizedResource::Broker);
    let extensions = tonic::Extensions::new();
    let issuing = gate()
        .authorize_follow_on(&extensions, &first, Action::IssueCertificate, claims())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(issuing.action(), Action::IssueCertificate);
    assert_eq!(issuing.caller().as_str(), WORKLOAD);
    assert_eq!(issuing.claims(), Some(&claims()));
    assert!(issuing.require_broker(Action::IssueCertificate).is_ok());
}

#[test]
fn a_follow_on_outside_the_table_or_the_policy_is_denied() {
    let gate = gate();
    let extensions = tonic::Extensions::new();
    let denied = |first: Action, then: Action, who: &str| {
        let first = Authorized::for_tests(who, first, AuthorizedResource::Broker);
        gate.authorize_follow_on(&extensions, &first, then, claims())
            .err()
            .map(|status| status.code())
    };
    let refused = Some(tonic::Code::PermissionDenied);
    // Not in the table, though the policy would allow it.
    assert_eq!(
        denied(Action::GetChallenge, Action::IssueCertificate, WORKLOAD),
        refused
    );
    assert_eq!(denied(Action::Attest, Action::GetToken, WORKLOAD), refused);
    // In the table, but the policy gives this caller no certificate.
    let stranger = "spiffe://keybroker.dev/stranger";
    assert_eq!(
        denied(Action::Attest, Action::IssueCertificate, stranger),
        refused
    );
    // A first authorization on a key is no ground for one on the broker.
    let on_key = Authorized::for_tests(
        WORKLOAD,
        Action::Attest,
        AuthorizedResource::Key("k".into()),
    );
    let err = gate
        .authorize_follow_on(&extensions, &on_key, Action::IssueCertificate, claims())
        .err()
        .map(|status| status.code());
    assert_eq!(err, refused);
}
