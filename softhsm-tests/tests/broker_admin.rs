//! End to end: operators drive the real `keybroker` process through `AdminService` over
//! mTLS: policy explained, reloaded from files, or set through the API and kept across
//! restarts; backends listed and registered. Refusals change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{BrokerProcess, POLICY, create};
use keybroker_api::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use softhsm_tests::Swtpm;
use tonic::Code;
use tonic::transport::Channel;

async fn admin(broker: &BrokerProcess, who: &str) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(broker.channel(who).await.unwrap())
}

fn explain(principal: &str, action: &str, key: &str) -> pb::ExplainDecisionRequest {
    pb::ExplainDecisionRequest {
        principal: format!("spiffe://test.keybroker/{principal}"),
        action: action.into(),
        key: key.into(),
        secret: String::new(),
    }
}

const STRANGER_MAY_LIST: &str = r#"
@id("stranger-lists")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/stranger",
  action == Keybroker::Action::"ListKeys",
  resource == Keybroker::Broker::"broker"
);
"#;

const BROKEN: &str = r#"
@id("typo")
permit (principal, action == Keybroker::Action::"Sing", resource);
"#;

async fn stranger_lists(broker: &BrokerProcess) -> Code {
    match broker
        .keys("stranger")
        .await
        .list_keys(pb::ListKeysRequest::default())
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_from_files_is_explained_and_reloaded_without_a_restart() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create(
        "pay",
        pb::KeyAlgorithm::EcP256,
        pb::KeyPurpose::SignVerify,
        "softhsm",
    ))
    .await
    .unwrap();
    let mut ops = admin(&broker, "admin").await;

    let d = ops
        .explain_decision(explain("workload", "Sign", "pay"))
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed);
    assert_eq!(d.policies, ["payments-sign"]);
    let d = ops
        .explain_decision(explain("workload", "RotateKey", "pay"))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    assert!(
        d.policies.is_empty() && d.errors.is_empty(),
        "denied by default: {d:?}"
    );
    let d = ops
        .explain_decision(explain("stranger", "Sign", "no-such-key"))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    for bad in [
        explain("workload", "Sing", "pay"),
        explain("workload", "Sign", ""),
        pb::ExplainDecisionRequest {
            principal: "not a spiffe id".into(),
            action: "Sign".into(),
            key: "pay".into(),
            secret: String::new(),
        },
    ] {
        assert_eq!(
            ops.explain_decision(bad).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    // Operator calls are refused to workloads.
    let err = admin(&broker, "workload")
        .await
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A file-managed policy is not set through the API.
    let err = ops
        .set_policy(pb::SetPolicyRequest {
            text: STRANGER_MAY_LIST.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let before = ops
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.policies, 7);
    assert_eq!(stranger_lists(&broker).await, Code::PermissionDenied);
    let file = broker.dir.path().join("policy.cedar");
    std::fs::write(&file, format!("{POLICY}{STRANGER_MAY_LIST}")).unwrap();
    let after = ops
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.policies, 8);
    assert_ne!(after.digest, before.digest);
    assert_eq!(stranger_lists(&broker).await, Code::Ok);

    // A broken file is refused with its policy named, and the policy in force stays.
    std::fs::write(&file, format!("{POLICY}{BROKEN}")).unwrap();
    let err = ops
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("typo"), "{err:?}");
    let kept = ops
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.digest, after.digest);
    assert_eq!(stranger_lists(&broker).await, Code::Ok);

    // SIGHUP reloads too: back to the original policy, and the stranger is refused again.
    std::fs::write(&file, POLICY).unwrap();
    broker.signal("HUP");
    let reloaded = common::eventually(std::time::Duration::from_secs(10), || {
        let (mut ops, want) = (ops.clone(), before.digest.clone());
        async move {
            let now = ops
                .get_policy(pb::GetPolicyRequest {})
                .await
                .unwrap()
                .into_inner();
            now.digest == want
        }
    })
    .await;
    assert!(
        reloaded,
        "SIGHUP did not reload the policy: {}",
        broker.log()
    );
    assert_eq!(stranger_lists(&broker).await, Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_managed_policy_is_bootstrapped_set_through_the_api_and_kept_across_restarts() {
    let mut broker = BrokerProcess::start();
    let config = broker.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("files = [\"policy.cedar\"]", "bootstrap = \"policy.cedar\""),
    )
    .unwrap();
    broker.restart();
    let mut ops = admin(&broker, "admin").await;
    assert_eq!(
        ops.get_policy(pb::GetPolicyRequest {})
            .await
            .unwrap()
            .into_inner()
            .policies,
        7
    );
    let err = ops
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let set = ops
        .set_policy(pb::SetPolicyRequest {
            text: format!("{POLICY}{STRANGER_MAY_LIST}"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.policies, 8);
    assert_eq!(stranger_lists(&broker).await, Code::Ok);
    let err = ops
        .set_policy(pb::SetPolicyRequest {
            text: format!("{POLICY}{BROKEN}"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("typo"), "{err:?}");

    // The bootstrap file no longer matters: the stored policy is the one in force.
    std::fs::write(broker.dir.path().join("policy.cedar"), "").unwrap();
    broker.restart();
    let mut ops = admin(&broker, "admin").await;
    let kept = ops
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.digest, set.digest);
    assert_eq!(stranger_lists(&broker).await, Code::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_are_listed_and_registered_and_bad_registrations_change_nothing() {
    let mut broker = BrokerProcess::start();
    let mut ops = admin(&broker, "admin").await;
    let mut keys = broker.keys("admin").await;
    keys.create_key(create(
        "on-hsm",
        pb::KeyAlgorithm::EcP256,
        pb::KeyPurpose::SignVerify,
        "softhsm",
    ))
    .await
    .unwrap();
    let list = |backends: Vec<pb::Backend>| {
        backends
            .into_iter()
            .map(|b| (b.name, b.kind, b.keys))
            .collect::<Vec<_>>()
    };
    let before = list(
        ops.list_backends(pb::ListBackendsRequest {})
            .await
            .unwrap()
            .into_inner()
            .backends,
    );
    assert_eq!(
        before,
        [
            ("softhsm".into(), "hsm".into(), 1),
            ("swtpm".into(), "tpm".into(), 0)
        ]
    );

    // Refusals: a module the broker may not load, the same token or TPM under a new
    // name, a relative PIN path, a TPM that does not answer, a bad name.
    let pin = broker.dir.path().join("user-pin").display().to_string();
    let hsm = |name: &str, module: &str, label: &str, pin: &str| pb::RegisterHsmBackendRequest {
        name: name.into(),
        module_path: module.into(),
        token_label: label.into(),
        user_pin_file: pin.into(),
        user_pin_env: String::new(),
    };
    let module = broker.hsm.module_path().display().to_string();
    let refusals = [
        (
            hsm("evil", "/tmp/evil.so", "e2e", &pin),
            Code::FailedPrecondition,
        ),
        (hsm("again", &module, "e2e", &pin), Code::AlreadyExists),
        (
            hsm("relative", &module, "other", "user-pin"),
            Code::InvalidArgument,
        ),
        (hsm("no pin", &module, "other", ""), Code::InvalidArgument),
    ];
    for (request, code) in refusals {
        let err = ops.register_hsm_backend(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    let tpm = |name: &str, tcti: &str| pb::RegisterTpmBackendRequest {
        name: name.into(),
        tcti: tcti.into(),
    };
    let err = ops
        .register_tpm_backend(tpm("again", &broker.tpm.tcti()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = ops
        .register_tpm_backend(tpm("bad/name", "device:/dev/null"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = ops
        .register_tpm_backend(tpm("gone", "swtpm:host=127.0.0.1,port=1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = admin(&broker, "workload")
        .await
        .register_tpm_backend(tpm("sneaky", "device:/dev/tpmrm0"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        list(
            ops.list_backends(pb::ListBackendsRequest {})
                .await
                .unwrap()
                .into_inner()
                .backends
        ),
        before
    );

    // A second TPM registered at run time holds keys, and is reopened after a restart.
    // (Its swtpm must outlive the broker, so it is declared before the restart.)
    let second = Swtpm::start();
    let added = ops
        .register_tpm_backend(tpm("tpm2", &second.tcti()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((added.kind.as_str(), added.available), ("tpm", true));
    keys.create_key(create(
        "on-tpm2",
        pb::KeyAlgorithm::EcP256,
        pb::KeyPurpose::SignVerify,
        "tpm2",
    ))
    .await
    .unwrap();
    broker.restart();
    let mut ops = admin(&broker, "admin").await;
    let after = list(
        ops.list_backends(pb::ListBackendsRequest {})
            .await
            .unwrap()
            .into_inner()
            .backends,
    );
    assert!(
        after.contains(&("tpm2".into(), "tpm".into(), 1)),
        "{after:?}"
    );
    let mut keys = broker.keys("admin").await;
    keys.sign(pb::SignRequest {
        name: "on-tpm2".into(),
        input: Some(pb::sign_request::Input::Message(b"hello".to_vec())),
        scheme: 0,
    })
    .await
    .unwrap();
}
