//! Benchmarks for Ground2Cloud live in `benches/` (criterion); this crate has no library code.
#![forbid(unsafe_code)]
