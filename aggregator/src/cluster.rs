//! Which aggregator replica does the once-per-cluster work (surge
//! detection, retention, roll-ups, federation pulls) when several serve one
//! shared database.
//!
//! Every replica writes a heartbeat to the store each background tick. The
//! leader is the live replica (heartbeat within the lease time) that has
//! been up longest, ties broken by id: every replica computes the same
//! answer from the same rows, no compare-and-set is needed (ClickHouse has
//! none), and a replica that restarts rejoins as a follower instead of
//! taking over. When the leader stops, the others see its heartbeats age
//! past the lease and the next-oldest takes over within one lease time.
//! A takeover cannot duplicate alerts: the detector adopts an alert already
//! stored for the same port, scope and start window.

use crate::store::{Store, StoreError};
use darkscope_common::Timestamp;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// The role all replicas elect a leader for.
pub const ROLE: &str = "background";

/// A replica as the cluster view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Replica {
    /// Replica id (host, process, random).
    pub id: String,
    /// When it started.
    pub since: Timestamp,
    /// True for the leader.
    pub leader: bool,
}

/// This replica's part in the election.
#[derive(Debug)]
pub struct Leadership {
    me: String,
    since: Timestamp,
    lease: Duration,
    leader: AtomicBool,
    view: Mutex<Vec<Replica>>,
}

impl Leadership {
    /// A replica with a fresh id; `interval` is the heartbeat period (the
    /// lease is three of them, at least 10 s).
    pub fn new(interval: Duration) -> Leadership {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let me = format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        Leadership {
            me,
            since: Timestamp::now(),
            lease: (interval * 3).max(Duration::from_secs(10)),
            leader: AtomicBool::new(false),
            view: Mutex::new(Vec::new()),
        }
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Relaxed)
    }

    /// The replicas seen at the last tick.
    pub fn view(&self) -> Vec<Replica> {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Sends a heartbeat and recomputes the leader; returns whether this
    /// replica leads. On a storage error it stops leading (better no
    /// detection for a moment than two detectors).
    pub fn tick(&self, store: &dyn Store, now: Timestamp) -> Result<bool, StoreError> {
        let r = self.elect(store, now);
        let leads = matches!(r, Ok(true));
        let was = self.leader.swap(leads, Relaxed);
        if leads != was {
            if leads {
                log::info!(
                    "replica {} now leads (detection, retention, federation pulls)",
                    self.me
                );
            } else {
                log::info!("replica {} follows", self.me);
            }
        }
        r
    }

    fn elect(&self, store: &dyn Store, now: Timestamp) -> Result<bool, StoreError> {
        store.heartbeat(ROLE, &self.me, self.since, now)?;
        let after = Timestamp(now.0.saturating_sub(self.lease.as_micros() as u64));
        let mut live = store.live_replicas(ROLE, after)?;
        if !live.iter().any(|(id, _)| *id == self.me) {
            live.push((self.me.clone(), self.since));
        }
        live.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let leader = live.first().map(|l| l.0.clone()).unwrap_or_default();
        if let Ok(mut v) = self.view.lock() {
            *v = live
                .iter()
                .map(|(id, since)| Replica {
                    id: id.clone(),
                    since: *since,
                    leader: *id == leader,
                })
                .collect();
        }
        Ok(leader == self.me)
    }
}
