//! Test support: simulation, linearizability checking.
//!
//! This crate is not part of raftkit's runtime. It holds what raftkit's own tests share:
//!
//! - [`history`]: record what clients of the replicated key-value store invoked and were
//!   told, with a text form so a failing run can save its history and re-check it;
//! - [`linearizability`]: decide whether such a history is linearizable (a WGL search,
//!   split per key), and if not, name the key and the smallest window that breaks it.
//!
//! Both are independent of time sources and of how operations are driven: the deterministic
//! simulation records virtual ticks, the multi-process chaos harness records wall-clock
//! nanoseconds, and both feed the same checker:
//!
//! ```text
//!  clients ──invoke/complete──► History ──check──► Verdict { ok, violation, inconclusive }
//!                                  │
//!                                  └── to_text ──► history.txt ──from_text──► re-check
//! ```

pub mod chaos;
pub mod history;
pub mod linearizability;
pub mod sim;
