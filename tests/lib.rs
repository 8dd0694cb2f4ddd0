//! End-to-end scenarios live in `scenarios/`; this crate has no library code.
