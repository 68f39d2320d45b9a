//! Wake-ups: tell LISTENing consumers that a queue got work, without serialising producers.
//!
//! A producer's `NOTIFY` makes PostgreSQL take a database-wide lock from pre-commit until the
//! commit is durable, so notifying transactions commit one at a time.  Notifying on every
//! enqueue would cap enqueue throughput at one commit per WAL flush.  So a producer notifies
//! only when a consumer has come up empty on that queue since the last notification (it is
//! presumably waiting on `LISTEN`); a busy queue sends nothing.
//!
//! Race-freedom (no consumer sleeps through a committed job):
//! * a producer decides at pre-commit, holding the queue's slot lock (shared) until its
//!   commit is visible;
//! * a consumer that found nothing first marks the slot idle, then takes and drops the slot
//!   lock exclusively (waiting out producers that decided before the mark), then claims
//!   again.  Any producer either saw the mark and notifies, or had committed before that
//!   second claim.
//!
//! A slot counts one queue's consumers, never another's: each database that has waiting
//! consumers gets a block of slots in shared memory, and queue id n uses slot n.  (Were two
//! queues to share a slot, a producer of one could answer, and so swallow, the wake-up a
//! consumer of the other waits for.)  Queues with ids beyond the block, and databases beyond
//! the blocks there are, have no slot: their producers notify on every commit instead.
//!
//! The slot locks are internal locks (`locks.rs`): no session can hold one and stall
//! producers at commit, where no statement timeout applies.  The notification's payload is
//! the queue's id (`job.queue_id`), not its name: any role may LISTEN on any channel.
//!
//! A commit can also make a job due later (a delayed enqueue, a retry's backoff): it then
//! tells the scheduler when, if that is before the scheduler means to wake, so that the job
//! is made ready, and its consumers woken, on time.
//!
//! The idle marks live in shared memory, so they need `shared_preload_libraries`; without it
//! every transaction that makes a job ready notifies (still once per queue per transaction).

use crate::server::locks::{self, Class};
use crate::server::shmem::{self, Kind, WAKEUP_SLOTS};
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::sync::atomic::Ordering;

/// The channel consumers `LISTEN` on; the payload is the queue's id.
pub const CHANNEL: &str = "pg_jobqueue";

thread_local! {
    /// Wake-ups this transaction owes, notified (or not) at pre-commit: (slot, payload).
    static PENDING: RefCell<Vec<(Option<usize>, String)>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// This transaction notified someone: at commit, also wake this database's executors.
    static WAKE_EXECUTORS: Cell<bool> = const { Cell::new(false) };
    /// This transaction installed the extension: at commit, ask the launcher for service.
    static REQUEST_SERVICE: Cell<bool> = const { Cell::new(false) };
    /// This transaction changed schedules or handlers: at commit, wake the scheduler.
    static WAKE_SCHEDULER: Cell<bool> = const { Cell::new(false) };
    /// This transaction made an endpoint able to send: at commit, wake the sender.
    static WAKE_SENDER: Cell<bool> = const { Cell::new(false) };
    /// The earliest time (TimestampTz) at which a job this transaction touched becomes due.
    static DUE_AT: Cell<Option<i64>> = const { Cell::new(None) };
}

extern "C-unwind" {
    // commands/async.h, not among pgrx's bindings.
    fn Async_Notify(channel: *const std::ffi::c_char, payload: *const std::ffi::c_char);
}

/// The wake-up slot of a queue (by id), if it has one.
fn slot_of(queue_id: i64) -> Option<usize> {
    usize::try_from(queue_id)
        .ok()
        .filter(|&id| id < WAKEUP_SLOTS)
}

/// The wake-up slot of a queue by name: how 0.1.0 and 0.2.0 databases address slots (two
/// queues of such a database may share one, as they did then).
fn legacy_slot_of(queue: &str) -> Option<usize> {
    Some((locks::key_of(queue) % WAKEUP_SLOTS as u64) as usize)
}

fn my_database() -> Oid {
    // SAFETY: set once at backend start.
    unsafe { pg_sys::MyDatabaseId }
}

fn register_callback() {
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: registering a guarded C callback once per backend.
        unsafe { pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut()) };
        CALLBACK_REGISTERED.set(true);
    }
}

/// The launcher should serve this database once the current transaction commits (before
/// that, a scheduler would not see the extension yet).
pub fn request_service_on_commit() {
    register_callback();
    REQUEST_SERVICE.set(true);
}

/// The database's scheduler should look at its tables as soon as the current transaction
/// commits (a new schedule may be due before its next tick).
pub fn wake_scheduler_on_commit() {
    register_callback();
    WAKE_SCHEDULER.set(true);
}

/// SQL (internal): an endpoint was created or resumed; its sender should look at commit (it
/// waits on no wake-up of that queue: it never found it empty).
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_sender() {
    register_callback();
    WAKE_SENDER.set(true);
}

fn owe_wakeup(slot: Option<usize>, payload: String) {
    register_callback();
    PENDING.with_borrow_mut(|pending| {
        if !pending.iter().any(|(_, p)| *p == payload) {
            pending.push((slot, payload));
        }
    });
}

/// SQL (internal): this transaction made jobs ready in the queue with this id; wake its
/// consumers if it commits.
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_queue_on_commit(queue_id: i64) {
    owe_wakeup(slot_of(queue_id), queue_id.to_string());
}

/// SQL (internal): a job this transaction touched becomes due at `at`; if it commits, the
/// scheduler makes it ready then (and wakes its consumers).
#[pg_extern(volatile, parallel_unsafe)]
fn _due_on_commit(at: TimestampWithTimeZone) {
    register_callback();
    let at = at.into_inner();
    DUE_AT.set(Some(DUE_AT.get().map_or(at, |earlier| earlier.min(at))));
}

/// SQL (internal): a consumer found the queue with this id empty and is about to wait.
/// Returns true when it should look once more (producers that committed meanwhile will not
/// notify it).
#[pg_extern(volatile, parallel_unsafe)]
fn _consumer_waits(queue_id: i64) -> bool {
    mark_idle(slot_of(queue_id))
}

/// 0.1.0 and 0.2.0's `_wake_on_commit(queue)`: kept because their install scripts, which the
/// upgrade path still runs, name this symbol.  Not declared in 0.3.0.
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn _wake_on_commit(queue: &str) {
    owe_wakeup(legacy_slot_of(queue), queue.to_owned());
}

/// 0.1.0 and 0.2.0's `_consumer_idle(queue)` (see [`_wake_on_commit`]).
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn _consumer_idle(queue: &str) -> bool {
    mark_idle(legacy_slot_of(queue))
}

/// Marks a consumer of the queue with this slot idle; returns whether it should look again.
/// (Without a slot, or a block for the database, there is nothing to mark: producers then
/// notify on every commit, and the consumer, already listening, hears each one.)
fn mark_idle(slot: Option<usize>) -> bool {
    if !shmem::available() {
        return false;
    }
    let (Some(slot), Some(block)) = (slot, shmem::wakeup_block(my_database(), true)) else {
        return false;
    };
    shmem::wakeup_counters(block, slot)
        .0
        .fetch_add(1, Ordering::SeqCst);
    let tag = locks::tag(Class::WakeupSlot, slot as u64);
    // SAFETY: taken and dropped at once: a barrier, never held.
    unsafe {
        pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as _, false, false);
        pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as _, false);
    }
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            let mut owed = PENDING.take();
            // One order for everyone: two producers never wait on each other's slot locks.
            owed.sort_by_key(|(slot, _)| slot.unwrap_or(usize::MAX));
            for (slot, payload) in owed {
                if notify_if_awaited(slot, &payload) {
                    WAKE_EXECUTORS.set(true);
                }
            }
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT => {
            if WAKE_EXECUTORS.replace(false) {
                shmem::wake(Kind::Executor);
                shmem::wake(Kind::Sender);
            } else if WAKE_SENDER.get() {
                shmem::wake(Kind::Sender);
            }
            WAKE_SENDER.set(false);
            if REQUEST_SERVICE.replace(false) {
                shmem::request_service(pg_sys::MyDatabaseId);
            }
            let due = DUE_AT.take();
            if WAKE_SCHEDULER.replace(false) || due.is_some_and(scheduler_wakes_later) {
                shmem::wake(Kind::Scheduler);
            }
        }
        // Aborted, or prepared (NOTIFY cannot be prepared): nothing to announce.
        _ => {
            PENDING.with_borrow_mut(Vec::clear);
            WAKE_EXECUTORS.set(false);
            REQUEST_SERVICE.set(false);
            WAKE_SCHEDULER.set(false);
            WAKE_SENDER.set(false);
            DUE_AT.set(None);
        }
    }
}

/// Whether this database's scheduler would sleep past `due` (or is awake, and might be about
/// to decide so without seeing the job: then it is told too, which costs it one more look).
fn scheduler_wakes_later(due: i64) -> bool {
    // SAFETY: MyDatabaseId is set at backend start.
    match shmem::scheduler_of(unsafe { pg_sys::MyDatabaseId }) {
        Some((_, Some(wake_at))) => due < wake_at,
        Some((_, None)) => true,
        None => false,
    }
}

/// Notifies LISTENers of a queue if one of them is waiting; returns whether it did.
fn notify_if_awaited(slot: Option<usize>, payload: &str) -> bool {
    if let (true, Some(slot)) = (shmem::available(), slot) {
        // Held until this commit is visible (a transaction-level lock).
        locks::acquire(
            &locks::tag(Class::WakeupSlot, slot as u64),
            pg_sys::ShareLock,
            true,
        );
        let Some(block) = shmem::wakeup_block(my_database(), false) else {
            // No consumer of this database ever waited, unless the blocks ran out.
            return shmem::wakeup_blocks_ran_out() && notify(payload);
        };
        let (idle_episodes, answered) = shmem::wakeup_counters(block, slot);
        let idle = idle_episodes.load(Ordering::SeqCst);
        let seen = answered.load(Ordering::SeqCst);
        if idle == seen
            || answered
                .compare_exchange(seen, idle, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return false; // nobody waits, or a concurrent producer answers this episode
        }
    }
    notify(payload)
}

fn notify(payload: &str) -> bool {
    let channel = CString::new(CHANNEL).expect("channel name has no NUL");
    let payload = CString::new(payload).expect("payloads have no NUL");
    // SAFETY: valid C strings; Async_Notify copies them into transaction memory.
    unsafe { Async_Notify(channel.as_ptr(), payload.as_ptr()) };
    true
}

#[cfg(test)]
mod tests {
    use super::{legacy_slot_of, slot_of};
    use crate::server::shmem::WAKEUP_SLOTS;

    #[test]
    fn each_queue_id_has_a_slot_of_its_own_or_none() {
        assert_eq!(slot_of(1), Some(1));
        assert_eq!(slot_of(1023), Some(1023));
        for id in [1024, 1025, i64::MAX, -5] {
            assert_eq!(slot_of(id), None, "{id}");
        }
        // The legacy mapping stays what 0.2.0 backends computed (FNV-1a of the name).
        assert_eq!(
            legacy_slot_of("a"),
            Some((0xaf63_dc4c_8601_ec8cu64 % WAKEUP_SLOTS as u64) as usize)
        );
    }
}
