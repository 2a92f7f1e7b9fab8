//! Benchmark support: [`gen`], a seeded generator of Internet-background-
//! radiation-like captures that also writes their ground truth.

pub mod gen;
pub mod scenarios;
pub mod synth;
