//! The SNP report parser must refuse, never panic, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Most random inputs fail the length check; also feed a full-length report built from
    // the input, with a plausible version, so the field parsers of every version run.
    if let Some((&version, rest)) = data.split_first() {
        let mut report = vec![0u8; attest::snp::REPORT_LEN];
        report[0] = 2 + version % 4;
        for (slot, byte) in report[4..].iter_mut().zip(rest) {
            *slot = *byte;
        }
        check(&report);
    }
});

fn check(bytes: &[u8]) {
    if let Ok(report) = attest::snp::parse_report(bytes) {
        // Whatever parses is a full-length report of a known version.
        assert_eq!(bytes.len(), attest::snp::REPORT_LEN);
        assert!((2..=5).contains(&report.version));
    }
}
