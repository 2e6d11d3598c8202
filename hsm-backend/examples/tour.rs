//! The HSM tour (`make demo`): a SoftHSM2 token under `./.dev`, keys made inside it, their
//! use, checks by independent implementations, and the token refusing to give a key up.
//!
//! Run it through `make demo`, which points `SOFTHSM2_CONF` at `./.dev/softhsm2.conf`.
//! PINs are generated once into `./.dev/so.pin` and `./.dev/user.pin` (mode 0600).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use hsm_backend::secrecy::ExposeSecret;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmBackend, HsmError, KeyAlgorithm, KeyId, KeyInfo, KeyLabel,
    KeySpec, KeyUsage, Pin, Pkcs11Module, PoolConfig, SignatureAlgorithm, TokenSelector, provision,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use rand::RngCore;

const TOKEN: &str = "keybroker-dev";
type TourResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("tour failed: {e}");
        std::process::exit(1);
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn run() -> TourResult {
    let dev = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".dev".into()));
    let module_path = softhsm_tests::SoftHsm::module_path_or_missing()?;
    step(&format!("Loading {}", module_path.display()));
    let module = Pkcs11Module::load(&module_path)?;

    let (so_pin, user_pin) = (
        pin_file(&dev.join("so.pin"))?,
        pin_file(&dev.join("user.pin"))?,
    );
    let selector = TokenSelector::Label(TOKEN.into());
    if module.find_token(&selector).is_err() {
        step(&format!(
            "Initialising token {TOKEN:?} (PINs in {}/*.pin)",
            dev.display()
        ));
        provision::init_token(&module, TOKEN, &so_pin)?;
        provision::init_user_pin(&module, &selector, &so_pin, &user_pin)?;
    }
    for token in module.tokens()? {
        let d = token.description;
        println!(
            "  slot {:>10}  label {:<16} serial {:<18} initialised {}",
            d.slot_id, d.label, d.serial, d.initialized
        );
    }

    let backend =
        HsmBackend::open_with(module.clone(), &selector, user_pin, PoolConfig::default())?;
    step("Keys, generated inside the token (or found again by id)");
    let ec = key(
        &backend,
        "tour-ec-p256",
        KeyAlgorithm::Ec(EcCurve::P256),
        KeyUsage::SignVerify,
    )?;
    let rsa = key(
        &backend,
        "tour-rsa-2048",
        KeyAlgorithm::Rsa(2048),
        KeyUsage::SignVerify,
    )?;
    let aes = key(
        &backend,
        "tour-aes-256",
        KeyAlgorithm::Aes256,
        KeyUsage::EncryptDecrypt,
    )?;
    let kek = key(
        &backend,
        "tour-kek",
        KeyAlgorithm::Aes256,
        KeyUsage::WrapUnwrap,
    )?;

    sign_and_check(&backend, &ec, &rsa, &dev)?;
    encrypt_and_tamper(&backend, &aes, &kek)?;
    show_refusals(&backend, &module, &ec)?;
    step("Done. The token lives in ./.dev/tokens; run `make demo` again to reuse it.");
    Ok(())
}

fn key(
    backend: &HsmBackend,
    name: &str,
    algorithm: KeyAlgorithm,
    usage: KeyUsage,
) -> TourResult<KeyInfo> {
    let id = KeyId::new(name.as_bytes().to_vec())?;
    let info = match backend.describe_key(&id) {
        Ok(info) => info,
        Err(HsmError::KeyNotFound(_)) => {
            backend.generate_key(&id, &KeyLabel::new(name)?, KeySpec::new(algorithm, usage)?)?
        }
        Err(e) => return Err(e.into()),
    };
    let bound = info.protection.is_some_and(|p| p.is_hardware_bound());
    println!(
        "  {name:<14} {:<12} {:<15} sensitive, never extractable, made in the token: {bound}",
        info.spec.algorithm().to_string(),
        format!("{:?}", info.spec.usage())
    );
    Ok(info)
}

fn sign_and_check(backend: &HsmBackend, ec: &KeyInfo, rsa: &KeyInfo, dev: &Path) -> TourResult {
    step("Sign in the token, verify outside it");
    let message = b"Keybroker: keys stay in hardware\n";
    let digest = Digest::of(HashAlgorithm::Sha256, message);
    let sig = backend.sign(&ec.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)?;
    let public = backend.public_key(&ec.id)?;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(public.as_der())?;
    vk.verify_prehash(digest.as_bytes(), &p256::ecdsa::Signature::from_der(&sig)?)?;
    println!(
        "  ECDSA P-256 signature ({} bytes DER) verified by the p256 crate",
        sig.len()
    );

    std::fs::write(dev.join("message.txt"), message)?;
    std::fs::write(dev.join("ec-p256.sig"), &sig)?;
    std::fs::write(dev.join("ec-p256.pub.pem"), public.to_pem()?)?;
    let openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dev.join("ec-p256.pub.pem"))
        .arg("-signature")
        .arg(dev.join("ec-p256.sig"))
        .arg(dev.join("message.txt"))
        .output()?;
    println!(
        "  openssl dgst -verify: {}",
        String::from_utf8_lossy(&openssl.stdout).trim()
    );

    let pss = SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256);
    let rsa_sig = backend.sign(&rsa.id, pss, &digest)?;
    let rsa_public = rsa::RsaPublicKey::from_public_key_der(backend.public_key(&rsa.id)?.as_der())?;
    rsa_public.verify(rsa::Pss::new::<sha2::Sha256>(), digest.as_bytes(), &rsa_sig)?;
    println!("  RSA-2048 PSS signature verified by the rsa crate");
    Ok(())
}

fn encrypt_and_tamper(backend: &HsmBackend, aes: &KeyInfo, kek: &KeyInfo) -> TourResult {
    step("Encrypt with AES-256-GCM in the token; tampering is caught");
    let sealed = backend.aes_gcm_encrypt(&aes.id, b"database password", b"tenant=demo")?;
    let opened = backend.aes_gcm_decrypt(&aes.id, &sealed, b"tenant=demo")?;
    println!(
        "  round trip: {:?}",
        String::from_utf8_lossy(opened.expose_secret())
    );
    let mut tampered = sealed.clone();
    if let Some(byte) = tampered.ciphertext.first_mut() {
        *byte ^= 1;
    }
    match backend.aes_gcm_decrypt(&aes.id, &tampered, b"tenant=demo") {
        Err(e) => println!("  one flipped bit: {e}"),
        Ok(_) => return Err("a tampered ciphertext opened".into()),
    }
    let (data_key, wrapped) = backend.generate_data_key(&kek.id)?;
    let unwrapped = backend.unwrap_data_key(&kek.id, &wrapped)?;
    println!(
        "  data key wrapped under the KEK ({} bytes), unwrapped equal: {}",
        wrapped.0.len(),
        unwrapped.expose() == data_key.expose()
    );
    Ok(())
}

fn show_refusals(backend: &HsmBackend, module: &Pkcs11Module, ec: &KeyInfo) -> TourResult {
    step("Try to take the private key out, with raw PKCS#11 and the PIN");
    let token = module.find_token(&TokenSelector::Serial(backend.token().serial.clone()))?;
    let session = module.context().open_ro_session(token.slot())?;
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(ec.id.as_bytes().to_vec()),
    ];
    let handle = *session
        .find_objects(&template)?
        .first()
        .ok_or("private key not found")?;
    let info = session.get_attribute_info(handle, &[AttributeType::Value])?;
    let refused = matches!(info.as_slice(), [AttributeInfo::Sensitive]);
    println!(
        "  read CKA_VALUE: {}",
        if refused {
            "refused, the value is sensitive"
        } else {
            "NOT REFUSED"
        }
    );
    let kek = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(b"tour-kek".to_vec()),
    ])?;
    if let Some(kek) = kek.first() {
        match session.wrap_key(&Mechanism::AesKeyWrapPad, *kek, handle) {
            Err(e) => println!("  wrap it under an AES key: refused ({e})"),
            Ok(_) => return Err("the private key was wrapped out".into()),
        }
    }
    Ok(())
}

/// Reads a PIN file, creating it with a random PIN (mode 0600) the first time.
fn pin_file(path: &Path) -> TourResult<Pin> {
    if !path.exists() {
        let mut bytes = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut bytes);
        let pin: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(pin.as_bytes())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(Pin::from_file(path)?)
}
