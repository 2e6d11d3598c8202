//! Loading, replacing and reloading policies; what a bad policy's error says.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{APP, decide, key, tags};
use crate::authz::{Action, Authorizer, AuthzError, PolicyProblem, Resource};
use crate::request::{Authorized, AuthorizedResource};

const SIGN_ONLY: &str = r#"@id("sign-only")
permit (principal, action == Keybroker::Action::"Sign", resource);"#;

fn admin(action: Action) -> Authorized {
    Authorized::for_tests(APP, action, AuthorizedResource::Broker)
}

fn invalid(error: AuthzError) -> Vec<PolicyProblem> {
    match error {
        AuthzError::Invalid(problems) => problems,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn policy_info_reports_text_digest_and_count() {
    let authz = Authorizer::from_text(SIGN_ONLY).unwrap();
    let info = authz.policy();
    assert_eq!(info.text, SIGN_ONLY);
    assert_eq!(info.digest_hex, hex::encode(Sha256::digest(SIGN_ONLY)));
    assert_eq!(info.policies, 1);
    assert!(format!("{authz:?}").contains(&info.digest_hex));
}

#[test]
fn unknown_attribute_is_rejected_naming_the_policy() {
    let text = r#"@id("fine") permit (principal, action == Keybroker::Action::"GetKey", resource);

@id("typo")
permit (principal, action == Keybroker::Action::"Sign", resource)
when { resource.owner == "me" };"#;
    let error = Authorizer::from_text(text).unwrap_err();
    let message = error.to_string();
    let problems = invalid(error);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].policy.as_deref(), Some("typo"));
    assert_eq!(problems[0].line, Some(3));
    assert!(message.contains("policy `typo` (line 3)"), "{message}");
    assert!(message.contains("owner"), "{message}");
}

#[test]
fn unknown_action_and_entity_type_are_rejected_naming_the_policy() {
    let error = Authorizer::from_text(
        r#"permit (principal, action == Keybroker::Action::"Frobnicate", resource);"#,
    )
    .unwrap_err();
    let message = error.to_string();
    assert_eq!(invalid(error)[0].policy.as_deref(), Some("policy0"));
    assert!(message.contains("Frobnicate"), "{message}");

    let error = Authorizer::from_text(
        r#"permit (principal, action, resource);
        @id("users") permit (principal is Keybroker::User, action, resource);"#,
    )
    .unwrap_err();
    let message = error.to_string();
    assert_eq!(invalid(error)[0].policy.as_deref(), Some("users"));
    assert!(message.contains("Keybroker::User"), "{message}");

    // Without the namespace the action is unknown too.
    let error = Authorizer::from_text(r#"permit (principal, action == Action::"Sign", resource);"#)
        .unwrap_err();
    assert_eq!(invalid(error)[0].policy.as_deref(), Some("policy0"));

    // Strict validation: an unguarded tag access is refused.
    let error = Authorizer::from_text(
        r#"@id("unguarded") permit (principal, action, resource is Keybroker::Key)
        when { resource.getTag("team") == "x" };"#,
    )
    .unwrap_err();
    assert_eq!(invalid(error)[0].policy.as_deref(), Some("unguarded"));
}

#[test]
fn policies_that_can_never_apply_are_refused() {
    // `==` on an action group matches no request: a forbid like this would silently
    // forbid nothing.
    let error = Authorizer::from_text(
        r#"@id("all") permit (principal, action, resource);
        @id("no-key-use") forbid (principal, action == Keybroker::Action::"KeyUse", resource);"#,
    )
    .unwrap_err();
    let message = error.to_string();
    let problems = invalid(error);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].policy.as_deref(), Some("no-key-use"));
    assert_eq!(problems[0].line, Some(2));
    assert!(message.contains("applicable action"), "{message}");

    // A Key-only condition on a Broker action can never hold either.
    let error = Authorizer::from_text(
        r#"@id("never") permit (principal, action == Keybroker::Action::"ListKeys", resource)
        when { resource is Keybroker::Key };"#,
    )
    .unwrap_err();
    assert_eq!(invalid(error)[0].policy.as_deref(), Some("never"));
}

#[test]
fn parse_errors_name_the_policy_and_line() {
    let text = "@id(\"ok\") permit (principal, action, resource);\n\
                // the broken one\n\
                @id(\"broken\") permit (principal, action, resource) when { 1 + };\n";
    let error = Authorizer::from_text(text).unwrap_err();
    let message = error.to_string();
    match error {
        AuthzError::Parse(problem) => {
            assert_eq!(problem.policy.as_deref(), Some("broken"));
            assert_eq!(problem.line, Some(3));
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(
        message.starts_with("policy does not parse: policy `broken` (line 3): "),
        "{message}"
    );

    let error =
        Authorizer::from_text("permit (principal, action, resource);\npermit (").unwrap_err();
    assert!(
        error.to_string().contains("policy `policy1` (line 2)"),
        "{error}"
    );
}

#[test]
fn templates_duplicate_and_empty_ids_are_refused() {
    let refused = |text: &str| match Authorizer::from_text(text).unwrap_err() {
        AuthzError::Refused(problem) => problem,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let problem = refused(
        r#"permit (principal, action, resource);
        @id("t") permit (principal == ?principal, action, resource);"#,
    );
    assert_eq!(problem.policy.as_deref(), Some("t"));
    assert!(problem.message.contains("templates"));

    let problem = refused(
        r#"@id("same") permit (principal, action, resource);
        @id("same") forbid (principal, action, resource);"#,
    );
    assert_eq!(problem.policy.as_deref(), Some("same"));
    assert_eq!(problem.line, Some(2));
    assert!(
        problem.message.contains("already used by line 1"),
        "{}",
        problem.message
    );

    // An @id may not take a default id that another policy has.
    let problem = refused(
        r#"permit (principal, action, resource);
        @id("policy0") forbid (principal, action, resource);"#,
    );
    assert_eq!(problem.policy.as_deref(), Some("policy0"));

    let problem = refused(r#"@id("") permit (principal, action, resource);"#);
    assert_eq!(problem.policy.as_deref(), Some("policy0"));
}

#[test]
fn failed_set_policy_leaves_the_old_policy_in_force() {
    let authz = Authorizer::from_text(SIGN_ONLY).unwrap();
    let before = authz.policy();
    let none = tags(&[]);
    for bad in [
        r#"@id("bad") permit (principal, action == Keybroker::Action::"Nope", resource);"#,
        "permit (",
        r#"@id("tmpl") permit (principal == ?principal, action, resource);"#,
    ] {
        assert!(
            authz.set_policy(&admin(Action::SetPolicy), bad).is_err(),
            "{bad}"
        );
        assert_eq!(authz.policy(), before);
        let decision = decide(&authz, APP, Action::Sign, key("k", &none));
        assert_eq!(decision.policies, ["sign-only"]);
    }

    let info = authz
        .set_policy(&admin(Action::SetPolicy), r#"@id("verify-only") permit (principal, action == Keybroker::Action::"Verify", resource);"#)
        .unwrap();
    assert_eq!(info, authz.policy());
    assert_ne!(info.digest_hex, before.digest_hex);
    assert!(!decide(&authz, APP, Action::Sign, key("k", &none)).allowed);
    assert!(decide(&authz, APP, Action::Verify, key("k", &none)).allowed);
    assert!(matches!(
        authz.reload(&admin(Action::ReloadPolicy)),
        Err(AuthzError::NoPolicyFiles)
    ));
}

#[test]
fn an_authorization_for_another_action_changes_no_policy() {
    let authz = Authorizer::from_text(SIGN_ONLY).unwrap();
    let before = authz.policy();
    let wrong = admin(Action::GetPolicy);
    let replacement = r#"@id("all") permit (principal, action, resource);"#;
    assert!(matches!(
        authz.set_policy(&wrong, replacement),
        Err(AuthzError::NotAuthorized(Action::SetPolicy))
    ));
    assert!(matches!(
        authz.reload(&wrong),
        Err(AuthzError::NotAuthorized(Action::ReloadPolicy))
    ));
    assert_eq!(authz.policy(), before);
}

#[test]
fn reload_picks_up_an_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.cedar");
    std::fs::write(&path, SIGN_ONLY).unwrap();
    let authz = Authorizer::from_files(std::slice::from_ref(&path)).unwrap();
    let none = tags(&[]);
    assert!(decide(&authz, APP, Action::Sign, key("k", &none)).allowed);
    assert!(!decide(&authz, APP, Action::ListKeys, Resource::Broker).allowed);

    std::fs::write(
        &path,
        r#"@id("lister") permit (principal, action == Keybroker::Action::"ListKeys", resource);"#,
    )
    .unwrap();
    assert!(
        decide(&authz, APP, Action::Sign, key("k", &none)).allowed,
        "no reload yet"
    );
    let info = authz.reload(&admin(Action::ReloadPolicy)).unwrap();
    assert_eq!(info.policies, 1);
    assert!(info.text.contains("lister"));
    assert!(!decide(&authz, APP, Action::Sign, key("k", &none)).allowed);
    assert_eq!(
        decide(&authz, APP, Action::ListKeys, Resource::Broker).policies,
        ["lister"]
    );

    // A broken edit is refused, naming the file; the last good policy stays.
    std::fs::write(
        &path,
        "// edited\npermit (principal, action, resource) when { resource.nope };",
    )
    .unwrap();
    let error = authz.reload(&admin(Action::ReloadPolicy)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("policy `policy0` ({}:2)", path.display())),
        "{message}"
    );
    assert!(decide(&authz, APP, Action::ListKeys, Resource::Broker).allowed);

    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(authz.reload(&admin(Action::ReloadPolicy)), Err(AuthzError::Io { path: p, .. }) if p == path)
    );
    assert!(decide(&authz, APP, Action::ListKeys, Resource::Broker).allowed);
}

#[test]
fn files_are_concatenated_with_ids_counted_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("10-base.cedar");
    let second = dir.path().join("20-extra.cedar");
    std::fs::write(
        &first,
        "permit (principal, action == Keybroker::Action::\"Sign\", resource);\n// no newline at end",
    )
    .unwrap();
    std::fs::write(
        &second,
        "\n\npermit (principal, action == Keybroker::Action::\"Verify\", resource);\n\
         permit (principal, action, resource) when { principal.nope };\n",
    )
    .unwrap();
    let paths: Vec<PathBuf> = vec![first.clone(), second.clone()];
    let error = Authorizer::from_files(&paths).unwrap_err();
    let problems = invalid(error);
    assert_eq!(problems[0].policy.as_deref(), Some("policy2"));
    assert_eq!(problems[0].file.as_deref(), Some(second.as_path()));
    assert_eq!(problems[0].line, Some(4));

    std::fs::write(
        &second,
        "permit (principal, action == Keybroker::Action::\"Verify\", resource);",
    )
    .unwrap();
    let authz = Authorizer::from_files(&paths).unwrap();
    assert_eq!(authz.files(), paths.as_slice());
    let info = authz.policy();
    assert_eq!(info.policies, 2);
    assert_eq!(
        info.text,
        format!(
            "{}\n{}",
            std::fs::read_to_string(&first).unwrap(),
            std::fs::read_to_string(&second).unwrap()
        )
    );
    let none = tags(&[]);
    assert_eq!(
        decide(&authz, APP, Action::Sign, key("k", &none)).policies,
        ["policy0"]
    );
    assert_eq!(
        decide(&authz, APP, Action::Verify, key("k", &none)).policies,
        ["policy1"]
    );

    assert!(matches!(
        Authorizer::from_files(&[]),
        Err(AuthzError::NoPolicyFiles)
    ));
    let missing = dir.path().join("missing.cedar");
    let error = Authorizer::from_files(std::slice::from_ref(&missing)).unwrap_err();
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}
