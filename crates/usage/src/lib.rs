//! mlgate-usage: what the usage metrics are read back for. APIM's reports ([`report`]) from the
//! metric values a host hands over or from the quarter-hour buckets of the [`timeline`], with
//! their query options ([`query`]), and the exact min/max gauges ([`extremes`]) kept across
//! workers in the limit store. Which slot a call counts in, and what it adds, is the core's
//! `usage` module; this crate only reads, keeps extremes and keeps the buckets.
//!
//! May depend on: mlgate-core.

pub mod acc;
pub mod batch;
pub mod extremes;
pub mod query;
pub mod report;
pub mod timeline;
