//! The broker's certificate authority: a CA key generated in an HSM, and the workload
//! certificates it signs there (`certificate`).

pub mod certificate;
