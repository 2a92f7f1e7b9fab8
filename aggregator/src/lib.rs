//! darkscope aggregator: authenticated ingest of sensor summaries
//! ([`ingest`], [`auth`]), durable storage behind the [`store::Store`] trait
//! (SQLite by default), the query API ([`api`]) and the analysts' console
//! ([`dashboard`]), and sharing with peer aggregators ([`federation`]). See ARCHITECTURE.md.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod detect;
pub mod enrich;
pub mod federation;
pub mod feeds;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod stix;
pub mod store;
pub mod taxii;
pub mod webhook;
