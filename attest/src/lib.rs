//! Filled by a later issue; see DESIGN.md.
#![forbid(unsafe_code)]
