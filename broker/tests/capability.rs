//! The authorization capability is enforced by the compiler: an operation called without
//! an `Authorized` from the gate, or with one made by hand, does not compile.

#[test]
fn operations_without_an_authorization_do_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
