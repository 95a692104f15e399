//! Conformance suites that every storage and transport implementation runs
//! against itself (enable the `testing` feature).
