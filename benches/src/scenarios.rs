//! Labelled scenarios for the surge detector, at the level the detector
//! sees: per window (1 minute), per port, distinct sources merged across
//! sensors, and how many sensors reported. Each scenario marks the port and
//! windows of its surge (if any); everything else is background.
//! [`evaluate`] feeds that to the detector's per-port state directly;
//! [`evaluate_through_store`] turns it into per-sensor summaries first and
//! runs them through a real store and the aggregator's detector loop.

use darkscope_aggregator::detect::{Coverage, DetectConfig, Detector, Event, PortState};
use darkscope_aggregator::ingest::validate;
use darkscope_aggregator::store::sqlite::SqliteStore;
use darkscope_aggregator::store::Store;
use darkscope_common::hll::Hll;
use darkscope_common::wire::*;
use darkscope_common::{Addr, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Windows per day.
pub const DAY: usize = 1440;

/// One labelled scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name for reports.
    pub name: String,
    /// Per port: distinct sources per window.
    pub ports: Vec<Vec<u64>>,
    /// Sensors reporting per window.
    pub sensors: Vec<u32>,
    /// The surge, if any: (port index, first window, last window).
    pub surge: Option<(usize, usize, usize)>,
}

impl Scenario {
    /// A scenario without a surge that a fair alarm threshold must stay
    /// quiet on (the unexcluded research sweep is shown, not calibrated on).
    pub fn is_quiet(&self) -> bool {
        self.surge.is_none() && !self.name.ends_with("not excluded")
    }
}

/// What the detector did on a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Windows from onset to the first alert on the surge port, if detected.
    pub delay: Option<usize>,
    /// Alerts outside the surge.
    pub false_alarms: usize,
    /// Ports × days observed.
    pub port_days: f64,
}

/// Alerts scored against a scenario's label as they come.
struct Tally<'a> {
    s: &'a Scenario,
    delay: Option<usize>,
    false_alarms: usize,
}

impl<'a> Tally<'a> {
    fn new(s: &'a Scenario) -> Tally<'a> {
        Tally {
            s,
            delay: None,
            false_alarms: 0,
        }
    }

    /// An alert on port index `p` in window `t`: the surge's (up to 5
    /// windows after its end) or a false alarm.
    fn alarm(&mut self, p: usize, t: usize) {
        match self.s.surge {
            Some((sp, a, b)) if sp == p && (a..=b + 5).contains(&t) => {
                self.delay.get_or_insert(t - a);
            }
            _ => self.false_alarms += 1,
        }
    }

    fn outcome(self) -> Outcome {
        Outcome {
            delay: self.delay,
            false_alarms: self.false_alarms,
            port_days: self.s.ports.len() as f64 * self.s.sensors.len() as f64 / DAY as f64,
        }
    }
}

fn poisson(rng: &mut SmallRng, lambda: f64) -> u64 {
    if lambda < 30.0 {
        // Knuth's method for small means.
        let l = (-lambda).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= rng.gen::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    let g: f64 = (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0;
    (lambda + g * lambda.sqrt()).round().max(0.0) as u64
}

/// Background: `n_ports` ports with means spread log-uniformly over
/// 1-400 sources per window, a daily cycle of ±50 %, Poisson noise, and
/// three sensors; `rate(port, t)` multiplies the mean (surges, outages).
fn build(
    name: &str,
    days: usize,
    n_ports: usize,
    seed: u64,
    rate: impl Fn(usize, usize) -> f64,
    sensors: impl Fn(usize) -> u32,
    surge: Option<(usize, usize, usize)>,
) -> Scenario {
    let mut rng = SmallRng::seed_from_u64(seed);
    let bases: Vec<f64> = (0..n_ports)
        .map(|i| (400f64.ln() * i as f64 / n_ports as f64).exp())
        .collect();
    let phase: Vec<f64> = (0..n_ports)
        .map(|_| rng.gen::<f64>() * std::f64::consts::TAU)
        .collect();
    let n = days * DAY;
    let ports = (0..n_ports)
        .map(|p| {
            (0..n)
                .map(|t| {
                    let cycle = 1.0
                        + 0.5
                            * ((t % DAY) as f64 / DAY as f64 * std::f64::consts::TAU + phase[p])
                                .sin();
                    poisson(&mut rng, bases[p] * cycle * rate(p, t))
                })
                .collect()
        })
        .collect();
    Scenario {
        name: name.into(),
        ports,
        sensors: (0..n).map(sensors).collect(),
        surge,
    }
}

/// The scenario set. `days` of 1-minute windows each; `seed` varies onsets.
pub fn all(days: usize, seed: u64) -> Vec<Scenario> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let n_ports = 40;
    let target = 20; // a port with ~30 sources per window
    let mut onset = || rng.gen_range(2 * DAY..(days - 1) * DAY);
    let mut v = vec![build(
        "background (daily cycle, noise)",
        days,
        n_ports,
        seed,
        |_, _| 1.0,
        |_| 3,
        None,
    )];
    for k in [2.0, 3.0, 10.0] {
        let t0 = onset();
        let len = 20;
        v.push(build(
            &format!("outbreak {k}x for {len} min"),
            days,
            n_ports,
            seed + k as u64,
            move |p, t| {
                if p == target && (t0..t0 + len).contains(&t) {
                    k
                } else {
                    1.0
                }
            },
            |_| 3,
            Some((target, t0, t0 + len - 1)),
        ));
    }
    let t0 = onset();
    v.push(build(
        "slow ramp to 3x over 6 h",
        days,
        n_ports,
        seed + 20,
        move |p, t| {
            if p == target && t >= t0 {
                1.0 + 2.0 * ((t - t0) as f64 / 360.0).min(1.0)
            } else {
                1.0
            }
        },
        |_| 3,
        Some((target, t0, t0 + 720)),
    ));
    let t0 = onset();
    v.push(build(
        "Mirai-like worm (exponential growth)",
        days,
        n_ports,
        seed + 30,
        move |p, t| {
            if p == target && t >= t0 {
                (1.0 + ((t - t0) as f64 / 30.0).exp_m1() * 0.05).min(20.0)
            } else {
                1.0
            }
        },
        |_| 3,
        Some((target, t0, t0 + 240)),
    ));
    // A flood: one more source (with millions of packets) is not a surge.
    let t0 = onset();
    v.push(build(
        "single-source flood",
        days,
        n_ports,
        seed + 40,
        move |p, t| {
            if p == target && (t0..t0 + 60).contains(&t) {
                1.0 + 1.0 / 30.0
            } else {
                1.0
            }
        },
        |_| 3,
        None,
    ));
    // One of three sensors offline for 2 hours: merged sources fall by 40 %.
    let t0 = onset();
    v.push(build(
        "sensor offline 2 h and back",
        days,
        n_ports,
        seed + 50,
        move |_, t| {
            if (t0..t0 + 120).contains(&t) {
                0.6
            } else {
                1.0
            }
        },
        move |t| if (t0..t0 + 120).contains(&t) { 2 } else { 3 },
        None,
    ));
    // A research scanner sweeping every port from a /24 for 30 minutes.
    // Excluded at the sensor (`--exclude`, tested on real captures in
    // sensor/tests/replay.rs) its sources never reach the detector, which
    // then sees the background; not excluded, it adds 256 sources to every
    // port — the reason for the exclusion list.
    let t0 = onset();
    let excluded = build(
        "research scanner sweep, excluded at the sensor",
        days,
        n_ports,
        seed + 60,
        |_, _| 1.0,
        |_| 3,
        None,
    );
    let mut seen = excluded.clone();
    seen.name = "research scanner sweep, not excluded".into();
    for port in &mut seen.ports {
        for x in &mut port[t0..t0 + 30] {
            *x += 256;
        }
    }
    v.push(excluded);
    v.push(seen);
    v
}

/// Runs the detector (the same `PortState` and `Coverage` the aggregator uses).
pub fn evaluate(s: &Scenario, cfg: &DetectConfig) -> Outcome {
    let mut cov = Coverage::default();
    let mut states = vec![PortState::default(); s.ports.len()];
    let mut tally = Tally::new(s);
    for t in 0..s.sensors.len() {
        if !cov.complete(s.sensors[t]) {
            continue;
        }
        for (p, st) in states.iter_mut().enumerate() {
            if let Some(Event::Opened { .. }) = st.step_at(cfg, s.ports[p][t], Some(t % DAY / 60)) {
                tally.alarm(p, t);
            }
        }
    }
    tally.outcome()
}

/// DShield's port trend score, as the comparison baseline:
/// `sqrt((S - s)^2 / s)` with `S` the port's sources over the last 24 h and
/// `s` their daily mean over up to 30 earlier days (the targets term is
/// left out: the scenarios carry sources only). `S` sums the per-window
/// distinct sources of the trailing day (the scenarios do not name sources,
/// so a day's union cannot be taken). Evaluated every window — the most
/// favourable timing for it — on rises only, after one full day of
/// history; an alert opens when the score crosses `theta` and re-arms when
/// it falls back below.
pub fn evaluate_dshield(s: &Scenario, theta: f64) -> Outcome {
    let n = s.sensors.len();
    let mut tally = Tally::new(s);
    for (p, series) in s.ports.iter().enumerate() {
        let mut prefix = vec![0u64; n + 1];
        for t in 0..n {
            prefix[t + 1] = prefix[t] + series[t];
        }
        let mut above = false;
        for t in 2 * DAY - 1..n {
            let end = t + 1;
            let day_start = end - DAY;
            let big_s = (prefix[end] - prefix[day_start]) as f64;
            let hist_start = day_start.saturating_sub(30 * DAY);
            let days = (day_start - hist_start) as f64 / DAY as f64;
            let small_s = (prefix[day_start] - prefix[hist_start]) as f64 / days;
            let score = if small_s > 0.0 && big_s > small_s {
                (big_s - small_s) / small_s.sqrt()
            } else {
                0.0
            };
            if score > theta && !above {
                above = true;
                tally.alarm(p, t);
            } else if score <= theta {
                above = false;
            }
        }
    }
    tally.outcome()
}

/// First port number of a scenario's ports as stored (TCP, `PORT_BASE + index`).
pub const PORT_BASE: u16 = 10_000;

/// The per-sensor summaries of window `t` of `s`, starting at `start_us`:
/// each port's merged count becomes that many distinct source addresses,
/// each seen by a random non-empty subset of the sensors reporting, so the
/// store has to merge the sensors' sketches to recover the scenario's
/// number. Port rows only (no source rows: their packets are untracked),
/// every total consistent, as a sensor would send them.
pub fn window_summaries(s: &Scenario, t: usize, start_us: u64, rng: &mut SmallRng) -> Vec<Summary> {
    let reporting = s.sensors[t].clamp(1, 3) as usize;
    let mut rows: Vec<Vec<PortRow>> = vec![Vec::new(); reporting];
    for (p, series) in s.ports.iter().enumerate() {
        let mut per: Vec<PortRow> = (0..reporting)
            .map(|_| crate::synth::tcp_port(PORT_BASE + p as u16))
            .collect();
        let base: u32 = rng.gen();
        for i in 0..series[t] as u32 {
            let a = Addr::v4(base.wrapping_add(i));
            let mut seen = false;
            for (k, row) in per.iter_mut().enumerate() {
                // The last sensor sees it if no other did.
                if (k + 1 == reporting && !seen) || rng.gen_bool(0.5) {
                    seen = true;
                    row.packets += 1;
                    row.bytes += 40;
                    row.sources += 1;
                    row.sources_hll.insert(a);
                }
            }
        }
        for (k, row) in per.into_iter().enumerate() {
            if row.packets > 0 {
                rows[k].push(row);
            }
        }
    }
    rows.into_iter()
        .enumerate()
        .map(|(k, ports)| {
            let mut all = Hll::new();
            for p in &ports {
                all.merge(&p.sources_hll);
            }
            let sensor = SensorInfo {
                id: format!("sensor-{k}"),
                country: "JP".into(),
                darknet: vec![format!("198.18.{k}.0/24")],
                monitored_ipv4: 256,
            };
            crate::synth::syn_summary(sensor, start_us, ports, Vec::new(), all.estimate(), all)
        })
        .collect()
}

/// Runs `s` through the aggregator's real path: every window's per-sensor
/// summaries validated as at ingest and stored in a SQLite store at `db`
/// (one commit per window: the sensors' uploads are stored concurrently),
/// and the aggregator's [`Detector`] ticking after each window as the
/// server does, reading merged sketches and sensor counts from the store.
/// Windows are placed in the past, day-aligned, so hours of the day match
/// [`evaluate`]'s.
pub fn evaluate_through_store(
    s: &Scenario,
    cfg: &DetectConfig,
    db: &std::path::Path,
    seed: u64,
) -> Result<Outcome, String> {
    let store = SqliteStore::open(db).map_err(|e| e.to_string())?;
    let day_us = DAY as u64 * 60_000_000;
    let n = s.sensors.len();
    let now = Timestamp::now().0;
    let t0 = (now / day_us).saturating_sub((n / DAY) as u64 + 2) * day_us;
    let mut detector = Detector::new(*cfg);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tally = Tally::new(s);
    for t in 0..n {
        let start = t0 + t as u64 * 60_000_000;
        let sums = window_summaries(s, t, start, &mut rng);
        for x in &sums {
            validate(x).map_err(|e| format!("window {t}: {e}"))?;
        }
        std::thread::scope(|sc| {
            let handles: Vec<_> = sums
                .iter()
                .map(|x| sc.spawn(|| store.insert_summary(x, "JP")))
                .collect();
            handles.into_iter().try_for_each(|h| match h.join() {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("insert thread panicked".to_string()),
            })
        })?;
        // The server ticks once the window is over plus its grace.
        let opened = detector
            .tick(&store, Timestamp(start + 180_000_001))
            .map_err(|e| e.to_string())?;
        for a in opened {
            let p = a.port.wrapping_sub(PORT_BASE) as usize;
            tally.alarm(p, ((a.start.0 - t0) / 60_000_000) as usize);
        }
    }
    Ok(tally.outcome())
}
