//! The policy guide cannot rot: every ```cedar block in docs/policy.md validates against
//! the schema, and the examples together decide as the guide says.

use super::{APP, decide, decide_with, key, snp_claims, tags};
use crate::authz::{Action, Authorizer, Resource};

const GUIDE: &str = include_str!("../../../../docs/policy.md");

/// The ```cedar blocks of a Markdown text, with the line each starts on.
fn cedar_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.as_mut() {
            None if fence && line.trim() == "```cedar" => open = Some((index + 1, String::new())),
            None => {}
            Some(_) if fence => blocks.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(
        open.is_none(),
        "docs/policy.md: a cedar block is not closed"
    );
    blocks
}

#[test]
fn the_block_finder_finds_only_cedar_blocks() {
    let text = "a\n```toml\nx = 1\n```\n```cedar\npermit (principal, action, resource);\n```\n";
    assert_eq!(
        cedar_blocks(text),
        [(5, "permit (principal, action, resource);\n".to_string())]
    );
}

#[test]
fn every_cedar_example_in_the_policy_guide_validates() {
    let blocks = cedar_blocks(GUIDE);
    assert!(
        blocks.len() >= 10,
        "only {} cedar blocks found",
        blocks.len()
    );
    for (line, text) in &blocks {
        if let Err(e) = Authorizer::from_text(text) {
            panic!("docs/policy.md, block at line {line}: {e}");
        }
    }
}

#[test]
fn the_guides_examples_decide_as_described() {
    let all: String = cedar_blocks(GUIDE).into_iter().map(|(_, t)| t).collect();
    let authz = Authorizer::from_text(&all).unwrap();
    let admin = "spiffe://prod.example.com/security/keyadmin";
    let api = "spiffe://prod.example.com/payments/api";
    let payments = tags(&[("team", "payments")]);
    let other = tags(&[("team", "other")]);

    assert!(decide(&authz, admin, Action::SetPolicy, Resource::Broker).allowed);
    assert!(decide(&authz, api, Action::Sign, key("k", &payments)).allowed);
    assert!(!decide(&authz, api, Action::Sign, key("k", &other)).allowed);
    assert!(!decide(&authz, api, Action::CreateKey, key("k", &payments)).allowed);
    // Deny by default: an identity no policy names.
    assert!(!decide(&authz, APP, Action::GetKey, key("k", &payments)).allowed);
    // A partner may verify shared keys but never administer, whatever else permits.
    let shared = tags(&[("shared-with", "partner.example.org")]);
    let partner = "spiffe://partner.example.org/verifier";
    assert!(decide(&authz, partner, Action::Verify, key("k", &shared)).allowed);
    assert!(!decide(&authz, partner, Action::RotateKey, key("k", &shared)).allowed);

    // Secret-class keys need real TEE claims, even for the administrator.
    let secret = tags(&[("class", "secret")]);
    let denied = decide(&authz, admin, Action::Decrypt, key("k", &secret));
    assert_eq!(denied.policies, ["secrets-need-real-tee"]);
    let claims = snp_claims("00");
    let attested = decide_with(
        &authz,
        admin,
        Action::Decrypt,
        key("k", &secret),
        Some(&claims),
    );
    assert!(attested.allowed, "{attested:?}");
    let insecure = attest::claims::Claims {
        insecure: true,
        ..snp_claims("00")
    };
    let dev = decide_with(
        &authz,
        admin,
        Action::Decrypt,
        key("k", &secret),
        Some(&insecure),
    );
    assert!(!dev.allowed);
}
