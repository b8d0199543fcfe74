//! mlgate-usage: what the usage metrics are read back for. APIM's reports ([`report`]) from the
//! metric values a host hands over, and the exact min/max gauges ([`extremes`]) kept across
//! workers in the limit store. Which slot a call counts in, and what it adds, is the core's
//! `usage` module; this crate only reads and keeps extremes.
//!
//! May depend on: mlgate-core.

pub mod extremes;
pub mod report;
