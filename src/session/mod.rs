//! Per-session state the SQL hot path reads and moves: where a claim starts, when to look for
//! stalled jobs, flow control's windows and cursors, metric helpers.

pub mod claim_cursor;
pub mod flow;
pub mod metrics;
pub mod rescue;
