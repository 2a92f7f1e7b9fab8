//! darkscope aggregator: authenticated ingest of sensor summaries
//! ([`ingest`], [`auth`]), durable storage behind the [`store::Store`] trait
//! (SQLite by default), and the query API ([`api`]). See ARCHITECTURE.md.

pub mod api;
pub mod auth;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod store;
