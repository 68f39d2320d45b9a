//! Where a session's next claim on a queue starts.
//!
//! Every claimed job leaves a dead entry at the front of the claim index (its row became
//! running, then moved to history) until vacuum removes it, and while any transaction older
//! than those rows stays open (a long report, a forgotten `REPEATABLE READ` session) vacuum
//! removes none.  A claim that starts at the front of the index walks them all: measured, one
//! dequeue read 4,431 buffers instead of 4 after 900,000 jobs, and with a transaction held
//! open for three minutes processing fell to 0.15× its rate.
//!
//! So when claims from the front of a queue are slow ([`SLOW_SCANS_IN_A_ROW`] in a row over
//! [`SLOW_FRONT_SCAN`]: dead entries lie there), a session remembers, per queue, the position (priority, run_at, id) of the
//! last job it claimed, and its next claim starts there: it continues along that priority in
//! claim order,
//! unless a job of a higher priority is waiting (one index probe, of a range that is empty
//! when a queue uses one priority), which a claim from the front then takes: priorities are
//! kept exactly.  A job of the same priority that sorts before the position (one whose
//! producer's transaction began earlier, a retry, a released or a rescued job keeping its old
//! place) is found by a claim from the front, which a session makes when the rest of its
//! position's priority has nothing for it, and otherwise at least every
//! [`FRONT_SCAN_INTERVAL`] — or 20 times as long as its last claim from the front took, when
//! dead entries make that slow, so those claims stay a small share of the work.  Such a job
//! waits at most that long behind younger jobs of its priority.  While claims from the front
//! are quick (vacuum keeps up), every claim starts there and claim order is exact.
//!
//! The position is only a hint, kept in the session (through PgBouncer, in whichever server
//! connection ran the claim): if the claim's transaction rolls back, the session forgets its
//! positions, so jobs handed back that way are found at once (a claim rolled back to a
//! savepoint: within the interval).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A claim from the front slower than this makes the session remember where it left off.
pub const SLOW_FRONT_SCAN: Duration = Duration::from_micros(500);
/// How many slow claims from the front in a row make a session use its cursor: a session's
/// first claims are slow anyway, as PostgreSQL plans their statements anew for the first five
/// executions.
pub const SLOW_SCANS_IN_A_ROW: u32 = 8;
/// How often a session's claims start from the front of the index at least.
pub const FRONT_SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Claims from the front are at most this share of a session's time (1/20).
const FRONT_SCAN_SPACING: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Position {
    priority: i32,
    run_at: TimestampWithTimeZone,
    id: i64,
}

struct Cursor {
    /// None until [`SLOW_SCANS_IN_A_ROW`] claims from the front in a row were slow.
    at: Option<Position>,
    slow_scans: u32,
    /// When a claim must start from the front again.
    front_scan_due: Instant,
}

thread_local! {
    static CURSORS: RefCell<HashMap<i64, Cursor>> = RefCell::new(HashMap::new());
    static FORGET_ON_ABORT: Cell<bool> = const { Cell::new(false) };
}

/// When the next claim from the front is due, after one that took `took` at `now`; None
/// (every claim starts from the front) when it was quick.
pub fn next_front_scan(now: Instant, took: Duration) -> Option<Instant> {
    (took >= SLOW_FRONT_SCAN).then(|| now + FRONT_SCAN_INTERVAL.max(took * FRONT_SCAN_SPACING))
}

/// SQL (internal): where this session's next claim on queue `queue_id` starts: one row (the
/// last claimed job's priority, run_at and id), or none when the claim starts at the front.
#[pg_extern(volatile, parallel_unsafe)]
fn _claim_cursor(
    queue_id: i64,
) -> TableIterator<
    'static,
    (
        name!(priority, i32),
        name!(run_at, TimestampWithTimeZone),
        name!(id, i64),
    ),
> {
    let now = Instant::now();
    let at = CURSORS.with_borrow(|cursors| {
        cursors
            .get(&queue_id)
            .filter(|c| now < c.front_scan_due)
            .and_then(|c| c.at)
            .map(|at| (at.priority, at.run_at, at.id))
    });
    TableIterator::new(at)
}

/// SQL (internal): this session claimed up to the job at (`priority`, `run_at`, `id`) on queue
/// `queue_id`; `front_scan_took` is how long the claim from the front took (NULL when it
/// started at the cursor).  NULL `id`: nothing was claimed, the next claim starts at the front.
#[pg_extern(volatile, parallel_unsafe)]
fn _move_claim_cursor(
    queue_id: i64,
    priority: Option<i32>,
    run_at: Option<TimestampWithTimeZone>,
    id: Option<i64>,
    front_scan_took: Option<f64>,
) {
    CURSORS.with_borrow_mut(|cursors| {
        let (Some(priority), Some(run_at), Some(id)) = (priority, run_at, id) else {
            cursors.remove(&queue_id);
            return;
        };
        let at = Position {
            priority,
            run_at,
            id,
        };
        let now = Instant::now();
        match (cursors.get_mut(&queue_id), front_scan_took) {
            (Some(cursor), None) => cursor.at = Some(at),
            (previous, took) => {
                let took = Duration::from_secs_f64(took.unwrap_or(0.0).clamp(0.0, 3600.0));
                match next_front_scan(now, took) {
                    Some(front_scan_due) => {
                        forget_on_abort();
                        let slow_scans = previous.map_or(0, |c| c.slow_scans) + 1;
                        let at = (slow_scans >= SLOW_SCANS_IN_A_ROW).then_some(at);
                        cursors.insert(
                            queue_id,
                            Cursor {
                                at,
                                slow_scans,
                                front_scan_due,
                            },
                        );
                    }
                    None => {
                        cursors.remove(&queue_id);
                    }
                }
            }
        }
    });
}

/// A rolled-back claim hands its jobs back: the session forgets its cursors, so its next
/// claims find those jobs at once.
fn forget_on_abort() {
    if FORGET_ON_ABORT.get() {
        return;
    }
    FORGET_ON_ABORT.set(true);
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || {
        CURSORS.with_borrow_mut(HashMap::clear);
        FORGET_ON_ABORT.set(false);
    });
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
        FORGET_ON_ABORT.set(false);
    });
}

#[cfg(test)]
mod tests {
    use super::{next_front_scan, FRONT_SCAN_INTERVAL};
    use std::time::{Duration, Instant};

    #[test]
    fn slow_front_scans_come_every_interval_or_twenty_times_their_cost() {
        let t0 = Instant::now();
        assert_eq!(next_front_scan(t0, Duration::ZERO), None);
        assert_eq!(next_front_scan(t0, Duration::from_micros(499)), None);
        assert_eq!(
            next_front_scan(t0, Duration::from_millis(5)),
            Some(t0 + FRONT_SCAN_INTERVAL)
        );
        assert_eq!(
            next_front_scan(t0, Duration::from_millis(50)),
            Some(t0 + Duration::from_secs(1))
        );
    }
}
