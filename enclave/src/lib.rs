//! Filled by a later issue; see docs/design.md.
#![forbid(unsafe_code)]
