//! Test support: simulation, linearizability checking.
