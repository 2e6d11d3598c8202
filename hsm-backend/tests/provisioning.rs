//! Token discovery and set-up against a real SoftHSM2 token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TOKEN_LABEL, pin, selector};
use hsm_backend::{
    HsmBackend, HsmConfig, HsmError, Pin, Pkcs11Module, PoolConfig, TokenSelector, provision,
};
use softhsm_tests::SoftHsm;

#[test]
fn a_fresh_directory_has_one_uninitialised_token_and_lists_mechanisms() {
    let softhsm = SoftHsm::new();
    let module = Pkcs11Module::load(softhsm.module_path()).unwrap();
    let tokens = module.tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(!tokens[0].description.initialized);
    let mechanisms = module.mechanisms(&tokens[0]).unwrap();
    for needed in [
        "CKM_ECDSA",
        "CKM_RSA_PKCS_PSS",
        "CKM_RSA_PKCS_OAEP",
        "CKM_AES_GCM",
        "CKM_AES_KEY_WRAP_PAD",
        "CKM_SHA256_HMAC",
    ] {
        assert!(
            mechanisms.iter().any(|m| m == needed),
            "{needed} missing from {mechanisms:?}"
        );
    }
}

#[test]
fn init_token_then_find_it_by_label_and_by_serial() {
    let t = common::token();
    let description = t.backend.token().clone();
    assert_eq!(description.label, TOKEN_LABEL);
    assert!(description.initialized && description.user_pin_initialized);
    assert_eq!(description.manufacturer, "SoftHSM project");
    let by_serial = t
        .module
        .find_token(&TokenSelector::Serial(description.serial.clone()))
        .unwrap();
    assert_eq!(by_serial.description.label, TOKEN_LABEL);
    // SoftHSM offers a new empty slot after init; the token moved off the first one.
    assert_eq!(t.module.tokens().unwrap().len(), 2);
}

#[test]
fn unknown_token_label_and_serial_are_refused() {
    let t = common::token();
    let err = t
        .module
        .find_token(&TokenSelector::Label("nope".into()))
        .unwrap_err();
    assert!(matches!(err, HsmError::TokenNotFound(_)));
    assert_eq!(err.to_string(), r#"no token with label "nope""#);
    let err = HsmBackend::open_with(
        t.module.clone(),
        &TokenSelector::Serial("0".into()),
        pin("x1234"),
        PoolConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        HsmError::TokenNotFound(TokenSelector::Serial(_))
    ));
}

#[test]
fn a_second_token_with_the_same_label_is_refused() {
    let t = common::token();
    let err = provision::init_token(&t.module, TOKEN_LABEL, &t.so_pin).unwrap_err();
    assert!(matches!(err, HsmError::TokenExists(_)), "{err}");
    assert!(matches!(
        provision::init_token(&t.module, &"x".repeat(33), &t.so_pin),
        Err(HsmError::InvalidInput(_))
    ));
}

#[test]
fn a_wrong_user_pin_is_refused_and_the_right_one_still_works() {
    let t = common::token();
    drop(t.backend);
    let err = HsmBackend::open_with(
        t.module.clone(),
        &selector(),
        pin("wrong-pin-0000"),
        PoolConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, HsmError::PinIncorrect), "{err}");
    assert!(
        HsmBackend::open_with(
            t.module.clone(),
            &selector(),
            t.user_pin.clone(),
            PoolConfig::default()
        )
        .is_ok()
    );
}

#[test]
fn a_wrong_so_pin_is_refused_and_the_user_pin_is_unchanged() {
    let t = common::token();
    drop(t.backend);
    let err = provision::init_user_pin(
        &t.module,
        &selector(),
        &pin("not-the-so-pin"),
        &pin("new-user-pin"),
    )
    .unwrap_err();
    assert!(matches!(err, HsmError::PinIncorrect), "{err}");
    let again = HsmBackend::open_with(
        t.module.clone(),
        &selector(),
        t.user_pin.clone(),
        PoolConfig::default(),
    );
    assert!(again.is_ok());
}

#[test]
fn changing_pins_makes_the_old_pin_fail_and_the_new_one_work() {
    let common::TestToken {
        backend,
        module,
        so_pin,
        user_pin,
        softhsm: _softhsm,
    } = common::token();
    drop(backend);
    let new_user = pin("changed-user-pin");
    provision::change_user_pin(&module, &selector(), &user_pin, &new_user).unwrap();
    let err = provision::change_user_pin(&module, &selector(), &user_pin, &new_user).unwrap_err();
    assert!(matches!(err, HsmError::PinIncorrect));
    let new_so = pin("changed-so-pin");
    provision::change_so_pin(&module, &selector(), &so_pin, &new_so).unwrap();
    assert!(matches!(
        provision::init_user_pin(&module, &selector(), &so_pin, &new_user),
        Err(HsmError::PinIncorrect)
    ));
    provision::init_user_pin(&module, &selector(), &new_so, &new_user).unwrap();
    assert!(
        HsmBackend::open_with(module.clone(), &selector(), new_user, PoolConfig::default()).is_ok()
    );
}

#[test]
fn open_from_config_names_a_missing_module() {
    let config = HsmConfig {
        module: "/nonexistent/libpkcs11.so".into(),
        token: selector(),
        user_pin: pin("whatever"),
        pool: PoolConfig::default(),
    };
    let err = HsmBackend::open(config).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/libpkcs11.so"),
        "{err}"
    );
}

#[test]
fn pins_come_from_files_and_the_environment_and_stay_out_of_debug() {
    use std::os::unix::fs::PermissionsExt;
    let softhsm = SoftHsm::new();
    let path = softhsm.scratch_dir().join("user.pin");
    std::fs::write(&path, "file-pin-1234\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = Pin::from_file(&path).unwrap();
    assert!(!format!("{from_file:?}").contains("file-pin"));

    // Readable by the group or by others: refused (the mode is checked on the opened file).
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Pin::from_file(&path).unwrap_err();
        assert!(
            err.to_string().contains("other users may access it"),
            "{err}"
        );
        assert!(!err.to_string().contains("file-pin"));
    }

    let err = Pin::from_env("KEYBROKER_TEST_PIN_THAT_IS_NOT_SET").unwrap_err();
    assert!(
        err.to_string()
            .contains("KEYBROKER_TEST_PIN_THAT_IS_NOT_SET")
    );
    assert!(matches!(
        Pin::from_file(&softhsm.scratch_dir().join("absent")),
        Err(HsmError::PinSource { .. })
    ));
}

#[test]
fn a_second_backend_on_the_same_token_is_refused_even_with_a_wrong_pin() {
    let t = common::token();
    for candidate in [pin("wrong-pin-0000"), t.user_pin.clone()] {
        let err = HsmBackend::open_with(
            t.module.clone(),
            &selector(),
            candidate,
            PoolConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(err, HsmError::TokenInUse(_)), "{err}");
    }
    // Security-officer work needs the user logged out: it says so instead of failing oddly.
    let err = provision::init_user_pin(&t.module, &selector(), &t.so_pin, &pin("another-pin"))
        .unwrap_err();
    assert!(matches!(err, HsmError::TokenInUse(_)), "{err}");
}
