//! The sender's HTTP half: the client and its signed requests ([`http`]), what an answer
//! means and what is recorded of it ([`outcome`]), and the rows the sender and SQL exchange,
//! read and written by name ([`rows`]).  The sender's loop, claims and records are
//! `worker/sender.rs`; the rules every delivery keeps are pg_jobqueue_rules::delivery, and
//! their SQL faces `functions/delivery.rs`.

pub mod http;
pub mod outcome;
pub mod rows;
