//! Flow control: the rate windows of rate-limited queues and keys, and the internal lock under
//! which a claim counts a concurrency key's running jobs.
//!
//! A rate limit of `limit` starts per `period` is kept as a sliding window of `SLOTS` slots,
//! each `period / SLOTS` wide, holding how many jobs started in it.  A claim at time `t`
//! counts every start in the slots from the one holding `t - period` on (a little more than
//! one period: the oldest slot is counted whole), and may add `limit` minus that.  So no
//! window of one period, wherever it begins, ever holds more than `limit` starts; the price is
//! that a saturated queue starts at most `limit` per `period + period / SLOTS` (5% less).
//! A token bucket (GCRA with a burst) was not taken: after a quiet spell it admits a whole
//! burst and then the steady rate, up to `2 * limit - 1` starts in one period.

use crate::server::locks::{self, Class};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// Slots per rate period.
pub const SLOTS: i64 = 20;

/// What a rate window admits: how many starts, the window after them, and (when fewer than
/// wanted) the earliest time in ms at which one more could start.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    pub granted: i32,
    pub base: i64,
    pub counts: Vec<i32>,
    pub next_at_ms: Option<i64>,
}

/// Admits up to `wanted` starts at `at_ms` into the window (`counts[i]` starts in slot
/// `base + i`; empty: never used) of a limit of `limit` starts per `period_ms`.  The window
/// keeps two periods of slots, so that a claim whose transaction began a little before the
/// newest start is judged on every start around it.  A time before the kept slots can no
/// longer be judged (its transaction began over a period before the newest start): nothing is
/// admitted, and `next_at_ms` says to look again at once.
pub fn take(
    base: i64,
    counts: &[i32],
    period_ms: i64,
    limit: i32,
    wanted: i32,
    at_ms: i64,
) -> Taken {
    let width = (period_ms.max(1) + SLOTS - 1) / SLOTS;
    let first = (at_ms - period_ms).div_euclid(width);
    let slot = at_ms.div_euclid(width);
    let (base, newest) = if counts.is_empty() {
        (slot - 2 * SLOTS - 2, slot)
    } else {
        (base, (base + counts.len() as i64 - 1).max(slot))
    };
    if first < base {
        return Taken {
            granted: 0,
            base,
            counts: counts.to_vec(),
            next_at_ms: Some(at_ms),
        };
    }
    let count_at = |s: i64| counts.get((s - base) as usize).copied().unwrap_or(0);
    // Every start from the slot holding `at - period` on, later ones included: a claim whose
    // transaction began before the newest start counts those, which covers every window of
    // one period it can fall in.
    let used: i64 = (first..=newest).map(|s| count_at(s) as i64).sum();
    let granted = (limit as i64 - used).clamp(0, wanted.max(0) as i64) as i32;
    let keep_from = base.max(first.min(newest - 2 * SLOTS - 1));
    let mut kept: Vec<i32> = (keep_from..=newest).map(count_at).collect();
    kept[(slot - keep_from) as usize] += granted;
    let next_at_ms = (granted < wanted).then(|| {
        // The oldest counted start leaves the count once `t - period` is past its slot.
        let oldest = (first..=newest)
            .find(|&s| count_at(s) > 0 || (s == slot && granted > 0))
            .unwrap_or(slot);
        ((oldest + 1) * width + period_ms).max(at_ms + 1)
    });
    Taken {
        granted,
        base: keep_from,
        counts: kept,
        next_at_ms,
    }
}

/// SQL (internal): how many of `wanted` starts at `at_ms` a rate window admits (see `take`).
#[pg_extern(immutable, parallel_safe)]
fn _rate_take(
    base: i64,
    counts: Vec<i32>,
    period_ms: i64,
    rate_limit: i32,
    wanted: i32,
    at_ms: i64,
) -> TableIterator<
    'static,
    (
        name!(granted, i32),
        name!(base, i64),
        name!(counts, Vec<i32>),
        name!(next_at_ms, Option<i64>),
    ),
> {
    let t = take(base, &counts, period_ms, rate_limit, wanted, at_ms);
    TableIterator::once((t.granted, t.base, t.counts, t.next_at_ms))
}

/// SQL (internal): takes concurrency key `key` of `queue` for this claim, until the claim's
/// transaction ends; false at once when another claim holds it.  Claims of one key so take
/// turns, and the running jobs each counts (in a snapshot taken after it got the lock) stay
/// exact until it commits; claims of other keys never wait.
#[pg_extern(volatile, parallel_unsafe)]
fn _try_lock_key(queue: &str, key: &str) -> bool {
    let name = format!("{queue}\u{0}{key}");
    locks::acquire(
        &locks::tag(Class::KeyClaim, locks::key_of(&name)),
        pg_sys::ExclusiveLock,
        false,
    )
}

/// SQL (internal): an enqueue with singleton or debounce key `key` (`kind` 's' or 'd') of
/// `queue` waits for other enqueues of the same key until this transaction ends, so that it
/// sees the job it would replace once theirs have committed.
#[pg_extern(volatile, parallel_unsafe)]
fn _lock_enqueue_key(queue: &str, kind: &str, key: &str) {
    let name = format!("{queue}\u{0}{kind}\u{0}{key}");
    locks::acquire(
        &locks::tag(Class::KeyEnqueue, locks::key_of(&name)),
        pg_sys::ExclusiveLock,
        true,
    );
}

thread_local! {
    /// Per fair queue (by id): the concurrency key this session's last claim served.
    static FAIR_CURSORS: RefCell<HashMap<i64, String>> = RefCell::new(HashMap::new());
}

/// SQL (internal): the concurrency key this session's last claim of fair queue `queue_id`
/// served (NULL: none yet); its next claim starts after it.  Per session, not shared: each
/// worker goes round the keys on its own, so claims never contend for a common position, and
/// every key still gets a turn per round of each worker.
#[pg_extern(volatile, parallel_unsafe)]
fn _fair_cursor(queue_id: i64) -> Option<String> {
    FAIR_CURSORS.with_borrow(|c| c.get(&queue_id).cloned())
}

/// SQL (internal): this session's claim of fair queue `queue_id` served `key` last (NULL: it
/// went round to the first key).
#[pg_extern(volatile, parallel_unsafe)]
fn _move_fair_cursor(queue_id: i64, key: Option<&str>) {
    FAIR_CURSORS.with_borrow_mut(|c| match key {
        Some(k) => {
            c.insert(queue_id, k.to_owned());
        }
        None => {
            c.remove(&queue_id);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window of one period: the most starts any of them holds.
    fn busiest_window(starts: &[i64], period_ms: i64) -> usize {
        starts
            .iter()
            .map(|&s| {
                starts
                    .iter()
                    .filter(|&&t| t >= s && t < s + period_ms)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Asks for `wanted` every `step_ms` from 0 to `until_ms`; returns every admitted start.
    fn run(period_ms: i64, limit: i32, wanted: i32, step_ms: i64, until_ms: i64) -> Vec<i64> {
        let (mut base, mut counts, mut starts) = (0, Vec::new(), Vec::new());
        let mut at = 0;
        while at < until_ms {
            let t = take(base, &counts, period_ms, limit, wanted, at);
            starts.extend(std::iter::repeat_n(at, t.granted as usize));
            (base, counts) = (t.base, t.counts);
            at += step_ms;
        }
        starts
    }

    #[test]
    fn no_window_of_one_period_holds_more_than_the_limit() {
        for (limit, wanted, step) in [
            (50, 1, 1),
            (50, 100, 7),
            (3, 2, 13),
            (1, 1, 3),
            (1000, 100, 1),
        ] {
            let starts = run(1000, limit, wanted, step, 10_000);
            assert!(
                busiest_window(&starts, 1000) <= limit as usize,
                "limit {limit} wanted {wanted} step {step}"
            );
        }
    }

    #[test]
    fn a_saturated_limit_runs_close_to_its_rate() {
        let starts = run(1000, 50, 100, 1, 10_000);
        // At most 50 per 1,050 ms: about 476 in 10 s, never more than 500.
        assert!(
            starts.len() >= 450 && starts.len() <= 500,
            "{}",
            starts.len()
        );
    }

    #[test]
    fn a_full_window_says_when_the_next_start_may_come() {
        let t = take(0, &[], 1000, 2, 3, 10_000);
        assert_eq!(t.granted, 2);
        let next = t.next_at_ms.unwrap();
        assert!(next > 10_000 && next <= 11_050, "{next}");
        let later = take(t.base, &t.counts, 1000, 2, 1, next);
        assert_eq!(later.granted, 1);
        assert_eq!(take(t.base, &t.counts, 1000, 2, 1, next - 1).granted, 0);
    }

    #[test]
    fn an_old_time_counts_later_starts_or_is_refused() {
        let t = take(0, &[], 1000, 2, 2, 5_000);
        // A claim whose transaction began 10 ms earlier sees the two later starts.
        assert_eq!(take(t.base, &t.counts, 1000, 2, 1, 4_990).granted, 0);
        // One that began long before the window cannot be judged.
        let old = take(t.base, &t.counts, 1000, 5, 1, 1_000);
        assert_eq!((old.granted, old.next_at_ms), (0, Some(1_000)));
    }

    #[test]
    fn a_window_keeps_two_periods_of_slots() {
        let t = take(0, &[], 1000, 5, 1, 0);
        let later = take(t.base, &t.counts, 1000, 5, 1, 60_000);
        assert_eq!(later.granted, 1);
        assert!(
            later.counts.len() as i64 <= 2 * SLOTS + 2,
            "{}",
            later.counts.len()
        );
        assert_eq!(later.counts.iter().sum::<i32>(), 1);
        assert_eq!(later.next_at_ms, None);
    }
}
