//! The benchmark runner behind `scripts/bench.sh` and `scripts/bench-*.sh`: the statistics
//! the tables print ([`stats`]) and plugin calls timed from the spawn to the exit, with the
//! peak RSS of one call ([`exec`]).

pub mod exec;
pub mod stats;

pub use exec::{Call, Timed};
pub use stats::Samples;
