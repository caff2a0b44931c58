//! The vxlan backend's unit tests, against the fake kernel (`fake.rs`): IPv4 (`v4.rs`),
//! dual-stack (`v6.rs`) and IPv6-only (`v6only.rs`).

pub(crate) mod fake;
mod v4;
mod v6;
mod v6only;
