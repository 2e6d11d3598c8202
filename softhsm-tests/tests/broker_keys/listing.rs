//! Listing end to end: pages, tag filters, refused page tokens, and the admin's key
//! counts, against the real broker.

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use tonic::Code;

use super::common::{BrokerProcess, create};

/// Lists with `request`, following pages; returns the names, page by page.
async fn list_pages(
    keys: &mut pb::key_service_client::KeyServiceClient<tonic::transport::Channel>,
    mut request: pb::ListKeysRequest,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = keys.list_keys(request.clone()).await.unwrap().into_inner();
        pages.push(page.keys.into_iter().map(|k| k.name).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 50, "pages never end");
        request.page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_listed_page_by_page_and_filtered_by_tags() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    for i in 0..7 {
        let mut request = create(&format!("p-{i}"), A::EcP256, P::SignVerify, "softhsm");
        let env = if i % 2 == 0 { "prod" } else { "dev" };
        request.tags.insert("env".into(), env.into());
        keys.create_key(request).await.unwrap();
    }
    keys.create_key(create("q-0", A::EcP256, P::SignVerify, "swtpm"))
        .await
        .unwrap();

    let request = |page_size, tags: &[(&str, &str)]| pb::ListKeysRequest {
        prefix: "p-".into(),
        page_size,
        page_token: String::new(),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    };
    let pages = list_pages(&mut keys, request(3, &[])).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let names: Vec<String> = (0..7).map(|i| format!("p-{i}")).collect();
    assert_eq!(pages.concat(), names);
    // Every tag must match; paging applies to what the filter keeps.
    let prod = list_pages(
        &mut keys,
        request(1, &[("env", "prod"), ("team", "payments")]),
    )
    .await;
    assert_eq!(prod.concat(), ["p-0", "p-2", "p-4", "p-6"]);
    assert_eq!(prod.len(), 4);
    assert!(
        list_pages(&mut keys, request(0, &[("env", "staging")]))
            .await
            .concat()
            .is_empty()
    );
    // A page size past the maximum is cut to it, not refused.
    assert_eq!(list_pages(&mut keys, request(u32::MAX, &[])).await.len(), 1);

    // A token the broker did not make is refused, and nothing is listed.
    for token in ["not base64!", "//8", "@@@@"] {
        let err = keys
            .list_keys(pb::ListKeysRequest {
                page_token: token.into(),
                ..request(3, &[])
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{token:?}: {err:?}");
        assert!(err.message().contains("page_token"), "{err:?}");
    }
    let too_many = (0..40)
        .map(|i| (format!("t{i}"), "v".to_string()))
        .collect();
    let err = keys
        .list_keys(pb::ListKeysRequest {
            tags: too_many,
            ..request(3, &[])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The admin's key counts per backend come from the store.
    let mut admin =
        pb::admin_service_client::AdminServiceClient::new(broker.channel("admin").await.unwrap());
    let backends = admin
        .list_backends(pb::ListBackendsRequest {})
        .await
        .unwrap()
        .into_inner()
        .backends;
    let count = |name: &str| backends.iter().find(|b| b.name == name).unwrap().keys;
    assert_eq!((count("softhsm"), count("swtpm")), (7, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_larger_than_the_message_limit_ends_early_and_continues() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    // 31 more tags of 256 characters: about 8 KB a key, so ten keys are more than the
    // fixture's 64 KiB message limit.
    for i in 0..10 {
        let mut request = create(&format!("big-{i}"), A::EcP256, P::SignVerify, "softhsm");
        for t in 0..31 {
            request.tags.insert(format!("tag{t:02}"), "v".repeat(256));
        }
        keys.create_key(request).await.unwrap();
    }
    let pages = list_pages(
        &mut keys,
        pb::ListKeysRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert!(pages.len() > 1, "one page of all ten: {pages:?}");
    let names: Vec<String> = pages.concat();
    let expected: Vec<String> = (0..10).map(|i| format!("big-{i}")).collect();
    assert_eq!(names, expected, "every key once, in order");
}
