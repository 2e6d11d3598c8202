//! Listing one page at a time, filtered by tags, and counts per backend: all in SQL.

use super::*;

/// Creates and completes a key with exactly `tags` in `backend`.
fn create_tagged(store: &SqliteStore, name: &str, backend: &str, tags: &[(&str, &str)]) {
    let key = NewKey {
        backend: backend.to_owned(),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..new_key(name)
    };
    store.begin_create(&key, &hsm(name)).wait().unwrap();
    store.complete_version(name, 1, &hsm(name)).wait().unwrap();
}

/// Follows pages of `page_size` under `prefix` and `tags`; returns the names, page by page.
fn pages(
    store: &SqliteStore,
    prefix: &str,
    tags: &[(&str, &str)],
    page_size: u32,
) -> Vec<Vec<String>> {
    let tags: BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let query = KeyQuery::new(prefix.to_owned(), tags.clone(), &token, page_size).unwrap();
        let page = store.list(&query).wait().unwrap();
        assert!(page.keys.len() <= query.page_size);
        pages.push(page.keys.iter().map(|k| k.name.clone()).collect());
        token = page.next_page_token();
        if token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "pages never end");
    }
}

#[test]
fn pages_follow_each_other_without_gaps_or_repeats() {
    let store = store();
    for i in 0..25 {
        create(&store, &format!("k{i:02}"));
    }
    // Not listed while being created.
    store
        .begin_create(&new_key("k12-creating"), &hsm("c"))
        .wait()
        .unwrap();
    let pages = pages(&store, "", &[], 10);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let all: Vec<String> = pages.concat();
    let expected: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(all, expected);
}

#[test]
fn the_last_full_page_has_no_next_token() {
    let store = store();
    for i in 0..20 {
        create(&store, &format!("k{i:02}"));
    }
    assert_eq!(pages(&store, "", &[], 10).len(), 2);
    assert_eq!(pages(&store, "", &[], 20).len(), 1);
    assert_eq!(pages(&store, "nothing", &[], 10), [Vec::<String>::new()]);
}

#[test]
fn keys_made_between_pages_are_listed_once_if_after_the_cursor() {
    let store = store();
    for name in ["b", "d", "f", "h"] {
        create(&store, name);
    }
    let first = store
        .list(&KeyQuery::new(String::new(), BTreeMap::new(), "", 2).unwrap())
        .wait()
        .unwrap();
    assert_eq!(names(&first.keys), ["b", "d"]);
    create(&store, "a");
    create(&store, "e");
    let token = first.next_page_token();
    let rest = store
        .list(&KeyQuery::new(String::new(), BTreeMap::new(), &token, 10).unwrap())
        .wait()
        .unwrap();
    assert_eq!(names(&rest.keys), ["e", "f", "h"]);
    assert!(rest.next_page_token().is_empty());
}

#[test]
fn every_tag_filter_must_match_and_pages_apply_after_filtering() {
    let store = store();
    create_tagged(
        &store,
        "a",
        HSM_BACKEND,
        &[("team", "pay"), ("env", "prod")],
    );
    create_tagged(&store, "b", HSM_BACKEND, &[("team", "pay"), ("env", "dev")]);
    create_tagged(
        &store,
        "c",
        HSM_BACKEND,
        &[("team", "ops"), ("env", "prod")],
    );
    create_tagged(&store, "d", HSM_BACKEND, &[("team", "pay")]);
    create_tagged(
        &store,
        "e",
        HSM_BACKEND,
        &[("team", "pay"), ("env", "prod")],
    );
    create_tagged(
        &store,
        "x/f",
        HSM_BACKEND,
        &[("team", "pay"), ("env", "prod")],
    );
    let all = |prefix, tags: &[(&str, &str)]| pages(&store, prefix, tags, 1).concat();
    assert_eq!(all("", &[("team", "pay")]), ["a", "b", "d", "e", "x/f"]);
    assert_eq!(
        all("", &[("team", "pay"), ("env", "prod")]),
        ["a", "e", "x/f"]
    );
    assert_eq!(all("x/", &[("env", "prod")]), ["x/f"]);
    // A value must match exactly, and a tag the key lacks does not match.
    assert!(all("", &[("team", "Pay")]).is_empty());
    assert!(all("", &[("team", "pa")]).is_empty());
    assert!(all("", &[("owner", "pay")]).is_empty());
    // One key per page, and a page is never cut by a key the filter drops.
    assert_eq!(pages(&store, "", &[("env", "prod")], 1).len(), 4);
}

#[test]
fn counts_per_backend_come_from_sql_and_skip_creating_keys() {
    let store = store();
    for name in ["a", "b", "c"] {
        create(&store, name);
    }
    create_tagged(&store, "t", TPM_BACKEND, &[]);
    store
        .set_state("c", &[KeyState::Enabled], KeyState::Destroyed, None)
        .wait()
        .unwrap();
    store
        .begin_create(&new_key("creating"), &hsm("creating"))
        .wait()
        .unwrap();
    store.add_backend(&hsm_backend("empty")).wait().unwrap();
    let counts = store.count_keys_by_backend().wait().unwrap();
    assert_eq!(
        counts,
        BTreeMap::from([(HSM_BACKEND.to_owned(), 3), (TPM_BACKEND.to_owned(), 1)])
    );
}
