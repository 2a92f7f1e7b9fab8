//! darkscope sensor library: see ARCHITECTURE.md for the map.
pub mod classify;
pub mod decode;
pub mod record;
