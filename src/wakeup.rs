//! Wake-ups: tell LISTENing consumers that a queue got work, without serialising producers.
//!
//! A producer's `NOTIFY` makes PostgreSQL take a database-wide lock from pre-commit until the
//! commit is durable, so notifying transactions commit one at a time.  Notifying on every
//! enqueue would cap enqueue throughput at one commit per WAL flush.  So a producer notifies
//! only when a consumer has come up empty on that queue since the last notification (it is
//! presumably waiting on `LISTEN`); a busy queue sends nothing.
//!
//! Race-freedom (no consumer sleeps through a committed job):
//! * a producer decides at pre-commit, holding a shared advisory lock on the queue's slot
//!   until its commit is visible;
//! * a consumer that found nothing first marks the slot idle, then takes and drops the
//!   exclusive lock (waiting out producers that decided before the mark), then claims again.
//!   Any producer either saw the mark and notifies, or had committed before that second claim.
//!
//! The idle marks live in shared memory, so they need `shared_preload_libraries`; without it
//! every transaction that makes a job ready notifies (still once per queue per transaction).

use crate::worker::registry;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The channel consumers `LISTEN` on; the payload is the queue name.
pub const CHANNEL: &str = "pg_jobqueue";

/// Queues hash onto this many slots; two queues sharing a slot only cost spurious wake-ups.
const SLOTS: usize = 1024;
/// First key of the advisory locks this module takes: (ADVISORY_CLASS, slot).
const ADVISORY_CLASS: u32 = 0x6a71_7765; // "jqwe"

type Counters = [AtomicU64; SLOTS];
/// Per slot: how many times a consumer came up empty.
static IDLE_EPISODES: PgAtomic<Counters> = unsafe { PgAtomic::new(c"pg_jobqueue_idle_episodes") };
/// Per slot: the idle episode the last notification answered.
static ANSWERED_EPISODES: PgAtomic<Counters> =
    unsafe { PgAtomic::new(c"pg_jobqueue_answered_episodes") };
/// Set in the postmaster when the library is preloaded, inherited by every backend.
static SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Queues this transaction made work ready in, notified (or not) at pre-commit.
    static PENDING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// This transaction notified someone: at commit, also wake this database's executors.
    static WAKE_EXECUTORS: Cell<bool> = const { Cell::new(false) };
    /// This transaction installed the extension: at commit, ask the launcher for service.
    static REQUEST_SERVICE: Cell<bool> = const { Cell::new(false) };
    /// This transaction changed schedules or handlers: at commit, wake the scheduler.
    static WAKE_SCHEDULER: Cell<bool> = const { Cell::new(false) };
}

extern "C-unwind" {
    // commands/async.h, not among pgrx's bindings.
    fn Async_Notify(channel: *const std::ffi::c_char, payload: *const std::ffi::c_char);
}

/// Called from `_PG_init`.
pub fn init() {
    // SAFETY: reading a postmaster global during library load.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(IDLE_EPISODES = std::array::from_fn(|_| AtomicU64::new(0)));
        pg_shmem_init!(ANSWERED_EPISODES = std::array::from_fn(|_| AtomicU64::new(0)));
        SHARED_MEMORY.store(true, Ordering::Relaxed);
    }
}

/// FNV-1a: stable across processes (std's hasher is randomly seeded per process).
fn slot_of(queue: &str) -> usize {
    let hash = queue.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % SLOTS as u64) as usize
}

fn slot_lock(slot: usize) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: set once at backend start.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: ADVISORY_CLASS,
        locktag_field3: slot as u32,
        locktag_field4: 2, // the (int4, int4) key space of pg_advisory_lock
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
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

/// SQL (internal): this transaction made jobs ready in `queue`; wake consumers if it commits.
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_on_commit(queue: &str) {
    register_callback();
    PENDING.with_borrow_mut(|pending| {
        if !pending.iter().any(|q| q == queue) {
            pending.push(queue.to_owned());
        }
    });
}

/// SQL (internal): a consumer found `queue` empty and is about to wait.  Returns true when it
/// should look once more (producers that committed meanwhile will not notify it).
#[pg_extern(volatile, parallel_unsafe)]
fn _consumer_idle(queue: &str) -> bool {
    if !SHARED_MEMORY.load(Ordering::Relaxed) {
        return false;
    }
    let slot = slot_of(queue);
    IDLE_EPISODES.get()[slot].fetch_add(1, Ordering::SeqCst);
    let tag = slot_lock(slot);
    // SAFETY: a session-level lock taken and dropped at once: a barrier, never held.
    unsafe {
        pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as _, true, false);
        pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as _, true);
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
            let mut queues = PENDING.take();
            // One order for everyone: two producers never wait on each other's slot locks.
            queues.sort_by_key(|q| slot_of(q));
            for queue in queues {
                if notify_if_awaited(&queue) {
                    WAKE_EXECUTORS.set(true);
                }
            }
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT => {
            if WAKE_EXECUTORS.replace(false) {
                registry::wake(registry::Kind::Executor);
            }
            if REQUEST_SERVICE.replace(false) {
                registry::request_service(pg_sys::MyDatabaseId);
            }
            if WAKE_SCHEDULER.replace(false) {
                registry::wake(registry::Kind::Scheduler);
            }
        }
        // Aborted, or prepared (NOTIFY cannot be prepared): nothing to announce.
        _ => {
            PENDING.with_borrow_mut(Vec::clear);
            WAKE_EXECUTORS.set(false);
            REQUEST_SERVICE.set(false);
            WAKE_SCHEDULER.set(false);
        }
    }
}

/// Notifies LISTENers of `queue` if one of them is waiting; returns whether it did.
fn notify_if_awaited(queue: &str) -> bool {
    if SHARED_MEMORY.load(Ordering::Relaxed) {
        let slot = slot_of(queue);
        let tag = slot_lock(slot);
        // SAFETY: a transaction-level lock, released when this commit is visible.
        unsafe { pg_sys::LockAcquire(&tag, pg_sys::ShareLock as _, false, false) };
        let idle = IDLE_EPISODES.get()[slot].load(Ordering::SeqCst);
        let answered = &ANSWERED_EPISODES.get()[slot];
        let seen = answered.load(Ordering::SeqCst);
        if idle == seen
            || answered
                .compare_exchange(seen, idle, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return false; // nobody waits, or a concurrent producer answers this episode
        }
    }
    let channel = CString::new(CHANNEL).expect("channel name has no NUL");
    let payload = CString::new(queue).expect("queue names have no NUL");
    // SAFETY: valid C strings; Async_Notify copies them into transaction memory.
    unsafe { Async_Notify(channel.as_ptr(), payload.as_ptr()) };
    true
}

#[cfg(test)]
mod tests {
    use super::{slot_of, SLOTS};

    #[test]
    fn slots_are_stable_and_in_range() {
        assert_eq!(slot_of("emails"), slot_of("emails"));
        for q in ["", "a", "emails", "a much longer queue name with spaces"] {
            assert!(slot_of(q) < SLOTS);
        }
        // Known FNV-1a value keeps the mapping stable across releases (shared with older backends).
        assert_eq!(
            slot_of("a"),
            (0xaf63_dc4c_8601_ec8cu64 % SLOTS as u64) as usize
        );
    }
}
