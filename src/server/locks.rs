//! Internal locks: heavyweight locks under a lock tag no SQL function can take.
//!
//! `pg_advisory_lock` and its siblings build `LOCKTAG_ADVISORY` tags only, so any role with
//! CONNECT can take any advisory key and hold it forever.  pg_jobqueue's own locks use the
//! `LOCKTAG_USERLOCK` type instead: the lock manager treats them like any lock (waits are
//! interruptible, deadlocks are detected, `pg_locks` shows them as `userlock`), but no user
//! session can acquire, hold or release one.  Field 4 of the tag says which kind of lock it is.

use pgrx::prelude::*;

/// What a lock protects; the value is the tag's fourth field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A wake-up slot: producers share it from pre-commit to commit, a consumer that is about
    /// to wait takes it exclusively for an instant (`wakeup.rs`).
    WakeupSlot = 1,
    /// A queue: producers share it while they add jobs, `drop_queue` holds it exclusively.
    Queue = 2,
    /// A handler queue: executors claiming from it take turns, so their concurrency count is
    /// exact.
    HandlerClaim = 3,
    /// A concurrency key of a queue: claims of the key take turns (`flow.rs`), so the running
    /// jobs each counts stay exact until it commits.
    KeyClaim = 4,
    /// A singleton or debounce key of a queue: enqueues of the key take turns, so each sees the
    /// job it replaces.
    KeyEnqueue = 5,
}

/// FNV-1a: a stable 64-bit key for a name (std's hasher is seeded per process).
pub fn key_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The tag of lock `key` of `class` in the current database.
pub fn tag(class: Class, key: u64) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: set once at backend start.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: (key >> 32) as u32,
        locktag_field3: key as u32,
        locktag_field4: class as u16,
        locktag_type: pg_sys::LockTagType::LOCKTAG_USERLOCK as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// Takes a transaction-level lock; with `wait` false, returns false at once when it is not
/// free.  A wait ends with the holder's transaction or with the caller's own timeouts.
pub fn acquire(tag: &pg_sys::LOCKTAG, mode: u32, wait: bool) -> bool {
    // SAFETY: a valid tag; the lock is released at the end of the transaction.
    let result = unsafe { pg_sys::LockAcquire(tag, mode as _, false, !wait) };
    result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
}

/// SQL (internal): a producer is about to add jobs to `queue`.  Shares the queue's lock until
/// this transaction ends, so that `drop_queue` waits for it; fails at once (SQLSTATE 55P03)
/// while a drop of the queue is in progress, instead of waiting for that transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn _guard_queue(queue: &str) {
    if !acquire(&tag(Class::Queue, key_of(queue)), pg_sys::ShareLock, false) {
        crate::raise(
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            format!("queue {} is being dropped", crate::quote_literal(queue)),
            "Another session is dropping this queue; try again once it has committed or rolled back.",
        );
    }
}

/// SQL (internal): `drop_queue` waits out the queue's in-flight producers and keeps new ones
/// out (they fail at once) until it commits.
#[pg_extern(volatile, parallel_unsafe)]
fn _lock_queue_for_drop(queue: &str) {
    acquire(
        &tag(Class::Queue, key_of(queue)),
        pg_sys::ExclusiveLock,
        true,
    );
}

/// SQL (internal): executors claiming from handler queue `queue` take turns until commit.
#[pg_extern(volatile, parallel_unsafe)]
fn _lock_handler_queue(queue: &str) {
    acquire(
        &tag(Class::HandlerClaim, key_of(queue)),
        pg_sys::ExclusiveLock,
        true,
    );
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys_are_stable_across_processes_and_releases() {
        // Known FNV-1a values: a key must mean the same queue in every backend.
        assert_eq!(key_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(key_of("emails"), key_of("email"));
    }
}
