//! The SNP report parser must refuse, never panic, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = attest::snp::parse_report(data) {
        // Whatever parses is a full-length report of a known version.
        assert_eq!(data.len(), attest::snp::REPORT_LEN);
        assert!((2..=5).contains(&report.version));
    }
});
