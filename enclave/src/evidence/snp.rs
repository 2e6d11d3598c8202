//! AMD SEV-SNP: an extended attestation report from `/dev/sev-guest`, with the VCEK or
//! VLEK the host supplies in its certificate table.
//!
//! The report goes to the broker byte for byte as the firmware returned it: the signature
//! covers the raw bytes, and re-encoding a parsed report does not reproduce fields the
//! parser skips (see `attest::snp`). What can be decided without the device (the request,
//! the certificate choice, the checks on the answer) is in pure functions tested below.

use attest::binding::snp_report_data;
use attest::challenge::Nonce;
use keybroker_api::v1::SnpEvidence;
use keybroker_api::v1::attest_request::Evidence;
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::{CertTableEntry, CertType};

use super::{EvidenceError, EvidenceSource};

const KIND: &str = "snp";
const DEVICE: &str = "/dev/sev-guest";

/// The highest virtual machine privilege level (the most restricted).
const MAX_VMPL: u32 = 3;

/// The VMPL a report is requested at: 0 (most privileged) to 3. The firmware refuses a
/// level more privileged than the one the guest runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vmpl(u32);

impl Vmpl {
    /// A VMPL from configuration.
    ///
    /// # Errors
    /// [`EvidenceError::Config`] for a level over 3.
    pub fn new(level: u32) -> Result<Self, EvidenceError> {
        if level > MAX_VMPL {
            return Err(EvidenceError::Config(format!(
                "SNP VMPL {level}: a VMPL is 0 to {MAX_VMPL}"
            )));
        }
        Ok(Self(level))
    }

    /// The level.
    pub fn level(self) -> u32 {
        self.0
    }
}

/// Evidence from the SEV-SNP guest device. Opens the device at each collection, so it
/// can be configured on a machine where the device appears later (or never: then every
/// collection fails with a [`EvidenceError::Device`] naming `/dev/sev-guest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpGuest {
    vmpl: Vmpl,
}

/// What the firmware is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReportRequest {
    report_data: [u8; 64],
    vmpl: Vmpl,
}

impl SnpGuest {
    /// A source requesting reports at `vmpl` (0 to 3; a guest without an SVSM runs at 0).
    ///
    /// # Errors
    /// [`EvidenceError::Config`] for a VMPL over 3.
    pub fn new(vmpl: u32) -> Result<Self, EvidenceError> {
        Ok(Self {
            vmpl: Vmpl::new(vmpl)?,
        })
    }

    /// The VMPL reports are requested at.
    pub fn vmpl(&self) -> Vmpl {
        self.vmpl
    }

    fn request(&self, nonce: &Nonce, ephemeral_spki_der: &[u8]) -> ReportRequest {
        ReportRequest {
            report_data: snp_report_data(nonce, ephemeral_spki_der),
            vmpl: self.vmpl,
        }
    }
}

impl EvidenceSource for SnpGuest {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, nonce: &Nonce, ephemeral_spki_der: &[u8]) -> Result<Evidence, EvidenceError> {
        let request = self.request(nonce, ephemeral_spki_der);
        let (raw, certificates) = extended_report(&request)?;
        let report = checked_report(&raw, &request)?;
        let vek_der = certificates
            .as_deref()
            .and_then(|table| select_vek(table, report.key_info.signing_key()))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Ok(Evidence::Snp(SnpEvidence {
            report: raw,
            vek_der,
        }))
    }
}

fn device(reason: String) -> EvidenceError {
    EvidenceError::Device {
        source_kind: KIND,
        reason,
    }
}

/// The raw report and the host's certificate table, if it supplied one.
#[cfg(target_os = "linux")]
fn extended_report(
    request: &ReportRequest,
) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), EvidenceError> {
    let mut firmware = sev::firmware::guest::Firmware::open().map_err(|e| {
        device(format!(
            "cannot open {DEVICE}: {e} (is this an SEV-SNP guest with the sev-guest driver?)"
        ))
    })?;
    firmware
        .get_ext_report(None, Some(request.report_data), Some(request.vmpl.level()))
        .map_err(|e| device(format!("{DEVICE}: extended report request failed: {e}")))
}

#[cfg(not(target_os = "linux"))]
fn extended_report(
    _request: &ReportRequest,
) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), EvidenceError> {
    Err(device(format!("{DEVICE} exists on Linux guests only")))
}

/// Parses the report as the broker will (`attest::snp::parse_report`: 1184 bytes, a
/// known version) and checks it answers this request, so a device fault shows here and
/// not as a refusal from the broker.
fn checked_report(raw: &[u8], request: &ReportRequest) -> Result<AttestationReport, EvidenceError> {
    let report = attest::snp::parse_report(raw)
        .map_err(|e| device(format!("{DEVICE} returned an unusable report: {e}")))?;
    if report.report_data != request.report_data {
        return Err(device(format!(
            "{DEVICE} returned a report for other REPORT_DATA than requested"
        )));
    }
    if report.vmpl != request.vmpl.level() {
        return Err(device(format!(
            "{DEVICE} returned a report at VMPL {}, not the requested {}",
            report.vmpl,
            request.vmpl.level()
        )));
    }
    Ok(report)
}

/// The DER of the key that signed the report, from the extended report's certificate
/// table: the VCEK for `SIGNING_KEY` 0, the VLEK for 1; `None` when the table lacks it
/// (the broker then looks in its certificate cache).
fn select_vek(table: &[CertTableEntry], signing_key: u32) -> Option<&[u8]> {
    let wanted = match signing_key {
        0 => CertType::VCEK,
        1 => CertType::VLEK,
        _ => return None,
    };
    table
        .iter()
        .find(|entry| entry.cert_type == wanted && !entry.data().is_empty())
        .map(CertTableEntry::data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// A real Genoa report (version 3), recorded in the verifier's test data.
    fn recorded_report() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attest/tests/data/snp/genoa_report.bin"
        );
        std::fs::read(path).unwrap()
    }

    #[test]
    fn vmpl_is_0_to_3() {
        for level in 0..=3 {
            assert_eq!(Vmpl::new(level).unwrap().level(), level);
        }
        for level in [4, 7, u32::MAX] {
            let err = Vmpl::new(level).unwrap_err();
            assert!(
                matches!(&err, EvidenceError::Config(m) if m.contains(&level.to_string())),
                "{err}"
            );
            assert!(SnpGuest::new(level).is_err());
        }
    }

    #[test]
    fn the_request_binds_nonce_and_key_at_the_configured_vmpl() {
        let guest = SnpGuest::new(2).unwrap();
        let nonce = Nonce::from_bytes([7; 32]);
        let request = guest.request(&nonce, b"spki");
        assert_eq!(request.report_data, snp_report_data(&nonce, b"spki"));
        assert_eq!(request.vmpl.level(), 2);
        assert_ne!(
            guest.request(&nonce, b"other").report_data,
            request.report_data
        );
        let other_nonce = Nonce::from_bytes([8; 32]);
        assert_ne!(
            guest.request(&other_nonce, b"spki").report_data,
            request.report_data
        );
    }

    #[test]
    fn the_signing_key_picks_the_vcek_or_the_vlek() {
        let table = [
            CertTableEntry::new(CertType::ARK, vec![1]),
            CertTableEntry::new(CertType::ASK, vec![2]),
            CertTableEntry::new(CertType::VLEK, vec![4]),
            CertTableEntry::new(CertType::VCEK, vec![3]),
            CertTableEntry::new(CertType::CRL, vec![5]),
        ];
        assert_eq!(select_vek(&table, 0), Some(&[3u8][..]));
        assert_eq!(select_vek(&table, 1), Some(&[4u8][..]));
        // 7 is "no key" (MASK_CHIP_KEY), 2 to 6 are reserved.
        assert_eq!(select_vek(&table, 7), None);
        assert_eq!(select_vek(&table, 2), None);
        // Absent or empty: the broker's certificate cache must serve.
        assert_eq!(select_vek(&table[..3], 0), None);
        assert_eq!(
            select_vek(&[CertTableEntry::new(CertType::VCEK, vec![])], 0),
            None
        );
        assert_eq!(select_vek(&[], 0), None);
    }

    #[test]
    fn a_report_is_passed_on_only_if_it_answers_the_request() {
        let raw = recorded_report();
        assert_eq!(raw.len(), attest::snp::REPORT_LEN);
        let parsed = attest::snp::parse_report(&raw).unwrap();
        let request = ReportRequest {
            report_data: parsed.report_data,
            vmpl: Vmpl::new(parsed.vmpl).unwrap(),
        };
        let checked = checked_report(&raw, &request).unwrap();
        assert_eq!(checked.measurement, parsed.measurement);

        let mut other_data = request;
        other_data.report_data[0] ^= 1;
        let err = checked_report(&raw, &other_data).unwrap_err();
        assert!(err.to_string().contains("REPORT_DATA"), "{err}");

        let other_vmpl = ReportRequest {
            vmpl: Vmpl::new((parsed.vmpl + 1) % 4).unwrap(),
            ..request
        };
        assert!(checked_report(&raw, &other_vmpl).is_err());

        let err = checked_report(&raw[..1000], &request).unwrap_err();
        assert!(
            matches!(
                &err,
                EvidenceError::Device {
                    source_kind: "snp",
                    ..
                }
            ),
            "{err}"
        );
    }
}
