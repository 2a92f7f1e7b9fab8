//! darkscope aggregator: ingest, storage, detection, query API and dashboard.
//!
//! Not built yet (see the aggregator issue); the crate exists so the workspace
//! has its fixed shape and shares `darkscope-common` from the start.
