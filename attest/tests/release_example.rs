//! The worked example of docs/secrets.md, read from the page and opened with this crate:
//! the page and the code cannot drift apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use attest::release::{KemKeyPair, Sealed, release_info};

fn example() -> std::collections::HashMap<String, String> {
    let page = include_str!("../../docs/secrets.md");
    let block = page
        .split("### Worked example")
        .nth(1)
        .and_then(|rest| rest.split("```text\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the worked example block");
    block
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_worked_example_opens_with_the_code() {
    let ex = example();
    let hex = |k: &str| hex::decode(&ex[k]).unwrap();
    let recipient = KemKeyPair::from_private_bytes(&hex("recipient sk")).unwrap();
    assert_eq!(
        recipient.public().as_bytes().as_slice(),
        hex("recipient pk")
    );
    let version: u64 = ex["version"].parse().unwrap();
    let info = release_info(&ex["name"], version, &ex["caller"]).unwrap();
    assert_eq!(info, hex("info"));
    let sealed = Sealed {
        enc: hex("enc"),
        ciphertext: hex("ciphertext"),
    };
    let opened = recipient.open(&sealed, &info).unwrap();
    assert_eq!(opened.as_slice(), ex["plaintext"].as_bytes());
    // Another caller's info does not open it.
    let other = release_info(&ex["name"], version, "spiffe://example.org/other").unwrap();
    assert!(recipient.open(&sealed, &other).is_err());
}
