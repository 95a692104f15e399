//! In-process transport (to be written).
