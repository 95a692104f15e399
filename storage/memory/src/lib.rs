//! In-memory stores (to be written).
