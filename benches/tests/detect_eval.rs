//! Regression test of the surge detector on short (4-day) labelled scenarios:
//! 3x and 10x outbreaks are found within 5 windows, and background, floods
//! and a sensor outage raise no alarm. The full 14-day evaluation is
//! `darkscope-detect-eval` (results in benches/RESULTS.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use darkscope_aggregator::detect::DetectConfig;
use darkscope_benches::scenarios::{all, evaluate};

#[test]
fn short_scenarios_keep_recall_delay_and_false_alarms() {
    let cfg = DetectConfig::default();
    for seed in [1u64, 2, 3] {
        for s in all(4, seed) {
            let o = evaluate(&s, &cfg);
            assert_eq!(o.false_alarms, 0, "{} (seed {seed}): false alarms", s.name);
            if s.name.starts_with("outbreak 3x") || s.name.starts_with("outbreak 10x") {
                let d = o
                    .delay
                    .unwrap_or_else(|| panic!("{} (seed {seed}) missed", s.name));
                assert!(d <= 5, "{} (seed {seed}): delay {d}", s.name);
            }
        }
    }
}
