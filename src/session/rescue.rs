//! When a `dequeue` should also look for stalled jobs.
//!
//! Finished jobs leave their entries in the lease index until vacuum, and once their leases
//! are in the past those entries sit in the range a stalled-job probe scans.  Probing on every
//! dequeue would walk them again and again; once per interval per session and queue is plenty
//! for rescuing jobs whose leases run in minutes.  Where the background worker's scheduler
//! serves the database, it takes stalled jobs back as their leases run out, and dequeues leave
//! it to it (unless `pg_jobqueue.rescue_interval` is 0: look on every dequeue): with a long
//! transaction open, the entries cannot be removed, and eight workers each looking once a
//! second read every one of them eight times a second.

use crate::server::gucs::RESCUE_INTERVAL_MS;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

thread_local! {
    static LAST_LOOK: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
}

/// True when the last look (if any) is at least `interval` before `now`.
pub fn look_due(last: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= interval)
}

/// SQL (internal): should this session's dequeue on `queue` look for stalled jobs now?
#[pg_extern(volatile, parallel_unsafe)]
fn _rescue_due(queue: &str) -> bool {
    let interval = Duration::from_millis(RESCUE_INTERVAL_MS.get().max(0) as u64);
    // SAFETY: MyDatabaseId is set at backend start.
    if !interval.is_zero()
        && crate::server::shmem::scheduler_of(unsafe { pg_sys::MyDatabaseId }).is_some()
    {
        return false;
    }
    let now = Instant::now();
    LAST_LOOK.with_borrow_mut(|looks| {
        let due = look_due(looks.get(queue).copied(), now, interval);
        if due {
            looks.insert(queue.to_owned(), now);
        }
        due
    })
}

#[cfg(test)]
mod tests {
    use super::look_due;
    use std::time::{Duration, Instant};

    #[test]
    fn first_look_is_always_due_then_once_per_interval() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert!(look_due(None, t0, second));
        assert!(!look_due(Some(t0), t0 + Duration::from_millis(999), second));
        assert!(look_due(Some(t0), t0 + second, second));
        assert!(look_due(Some(t0), t0, Duration::ZERO));
    }
}
