//! Conformance suites that every storage and transport implementation runs
//! against itself (enable the `testing` feature).

pub mod storage;
pub mod transport;
