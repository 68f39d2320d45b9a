//! Shared memory: everything pg_jobqueue keeps there, and the one place that sets it up.
//! It exists only when the library is preloaded ([`available`]).  All of it is lock-free
//! atomics; registry entries pack a database OID into the high 32 bits of a u64 so one
//! compare-and-swap claims or frees an entry.
//!
//! * `PROCESSES`: each running scheduler and executor, so that `DROP DATABASE` can stop them
//!   and a committing producer can wake its database's executors; beside each, `WAKE_AT`:
//!   when a sleeping scheduler plans to wake, so that a commit that makes a job due earlier
//!   wakes it (see `wakeup.rs`).
//! * `SERVICE_REQUESTS`: databases whose `CREATE EXTENSION` just committed, for the launcher.
//! * `DECLINED`: databases whose scheduler found no extension and exited; the launcher stops
//!   restarting it.
//! * `DROPPING`: databases being dropped; the launcher leaves them alone for a while.
//! * `IDLE_EPISODES`, `ANSWERED_EPISODES`: the wake-up protocol's counters, a block of slots
//!   per database that has waiting consumers (`WAKEUP_BLOCK_OWNERS`), one slot per queue id
//!   (`wakeup.rs`).

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const MAX_PROCESSES: usize = 256;
const MAX_REQUESTS: usize = 64;
/// How long a database stays off-limits after a `DROP DATABASE` started (it may fail).
const DROP_HOLD_SECONDS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scheduler = 1,
    Executor = 2,
    Sender = 3,
}

type Slots<const N: usize> = [AtomicU64; N];
static PROCESSES: PgAtomic<Slots<MAX_PROCESSES>> =
    unsafe { PgAtomic::new(c"pg_jobqueue_processes") };
static KINDS: PgAtomic<Slots<MAX_PROCESSES>> =
    unsafe { PgAtomic::new(c"pg_jobqueue_process_kinds") };
static SERVICE_REQUESTS: PgAtomic<Slots<MAX_REQUESTS>> =
    unsafe { PgAtomic::new(c"pg_jobqueue_service_requests") };
static DECLINED: PgAtomic<Slots<MAX_REQUESTS>> = unsafe { PgAtomic::new(c"pg_jobqueue_declined") };
static DROPPING: PgAtomic<Slots<MAX_REQUESTS>> = unsafe { PgAtomic::new(c"pg_jobqueue_dropping") };
static LAUNCHER_PID: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"pg_jobqueue_launcher_pid") };
/// Per process slot: when that scheduler plans to wake (a TimestampTz), or 0 while it is awake.
static WAKE_AT: PgAtomic<Slots<MAX_PROCESSES>> = unsafe { PgAtomic::new(c"pg_jobqueue_wake_at") };

/// Wake-up slots per database: queue ids 0..WAKEUP_SLOTS each have a slot of their own, so a
/// slot's counters only ever count one queue's consumers (see `wakeup.rs`).
pub const WAKEUP_SLOTS: usize = 1024;
/// Databases whose consumers wait at once, each with a block of slots.
pub const WAKEUP_DATABASES: usize = 32;
type Block = [AtomicU64; WAKEUP_SLOTS];
/// Which database each block of wake-up slots belongs to (0: free).
static WAKEUP_BLOCK_OWNERS: PgAtomic<Slots<WAKEUP_DATABASES>> =
    unsafe { PgAtomic::new(c"pg_jobqueue_wakeup_block_owners") };
/// Per block and slot: how many times a consumer came up empty.
static IDLE_EPISODES: PgAtomic<[Block; WAKEUP_DATABASES]> =
    unsafe { PgAtomic::new(c"pg_jobqueue_idle_episodes") };
/// Per block and slot: the idle episode the last notification answered.
static ANSWERED_EPISODES: PgAtomic<[Block; WAKEUP_DATABASES]> =
    unsafe { PgAtomic::new(c"pg_jobqueue_answered_episodes") };
/// Set once a database found no free block: from then on, producers of databases without a
/// block notify on every commit (correct, only less frugal).
static WAKEUP_BLOCKS_RAN_OUT: PgAtomic<AtomicU64> =
    unsafe { PgAtomic::new(c"pg_jobqueue_wakeup_blocks_ran_out") };
/// Set in the postmaster when the library is preloaded, inherited by every backend.
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init`: sets shared memory up when preloading (otherwise there is none).
pub fn init() {
    // SAFETY: reading a postmaster global during library load.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(PROCESSES = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(KINDS = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(SERVICE_REQUESTS = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(DECLINED = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(DROPPING = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(LAUNCHER_PID = AtomicU64::new(0));
    pg_shmem_init!(WAKE_AT = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(WAKEUP_BLOCK_OWNERS = std::array::from_fn(|_| AtomicU64::new(0)));
    pg_shmem_init!(
        IDLE_EPISODES = std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))
    );
    pg_shmem_init!(
        ANSWERED_EPISODES = std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))
    );
    pg_shmem_init!(WAKEUP_BLOCKS_RAN_OUT = AtomicU64::new(0));
    AVAILABLE.store(true, Ordering::Relaxed);
}

/// False when the library was not preloaded: there is no worker and no shared memory.
pub fn available() -> bool {
    AVAILABLE.load(Ordering::Relaxed)
}

fn pack(db: pg_sys::Oid, low: u32) -> u64 {
    (u64::from(db.to_u32()) << 32) | u64::from(low)
}

fn db_of(entry: u64) -> u32 {
    (entry >> 32) as u32
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Puts `entry` into the first free slot and returns its index; None when all are taken.
fn insert<const N: usize>(slots: &Slots<N>, entry: u64) -> Option<usize> {
    slots.iter().position(|slot| {
        slot.compare_exchange(0, entry, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Registers the calling worker process; it is forgotten again when the process exits.
/// Returns its slot (None when the table is full).
pub fn register_process(db: pg_sys::Oid, kind: Kind) -> Option<usize> {
    // SAFETY: MyProcPid is set at process start.
    let entry = pack(db, unsafe { pg_sys::MyProcPid } as u32);
    let i = insert(PROCESSES.get(), entry)?;
    KINDS.get()[i].store(kind as u64, Ordering::SeqCst);
    // SAFETY: registering a guarded callback with a plain integer argument.
    unsafe {
        pg_sys::before_shmem_exit(Some(unregister_process), pg_sys::Datum::from(i));
    }
    Some(i)
}

/// Said by a scheduler (in its slot) before it sleeps: it will wake at `at` (a TimestampTz),
/// or, with None, it is awake and will look at its tables before sleeping again.
pub fn publish_wake_at(slot: Option<usize>, at: Option<i64>) {
    if let Some(i) = slot {
        WAKE_AT.get()[i].store(at.map_or(0, |t| t.max(1) as u64), Ordering::SeqCst);
    }
}

/// The current database's scheduler, if one runs: its pid and when it plans to wake
/// (None: it is awake).
pub fn scheduler_of(db: pg_sys::Oid) -> Option<(i32, Option<i64>)> {
    if !available() {
        return None;
    }
    let kinds = KINDS.get();
    let wake = WAKE_AT.get();
    PROCESSES.get().iter().enumerate().find_map(|(i, slot)| {
        let entry = slot.load(Ordering::SeqCst);
        (entry != 0
            && db_of(entry) == db.to_u32()
            && kinds[i].load(Ordering::SeqCst) == Kind::Scheduler as u64)
            .then(|| {
                let at = wake[i].load(Ordering::SeqCst);
                (entry as u32 as i32, (at != 0).then_some(at as i64))
            })
    })
}

/// The block of wake-up slots of database `db`; with `claim`, a free one becomes its own (None
/// when all are taken: that is then remembered, see [`wakeup_blocks_ran_out`]).
pub fn wakeup_block(db: pg_sys::Oid, claim: bool) -> Option<usize> {
    let owners = WAKEUP_BLOCK_OWNERS.get();
    let me = u64::from(db.to_u32());
    if let Some(i) = owners.iter().position(|o| o.load(Ordering::SeqCst) == me) {
        return Some(i);
    }
    if !claim {
        return None;
    }
    let claimed = owners.iter().position(|o| {
        o.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    if claimed.is_none() {
        WAKEUP_BLOCKS_RAN_OUT.get().store(1, Ordering::SeqCst);
    }
    claimed
}

/// Whether some database ever found no free block of wake-up slots.
pub fn wakeup_blocks_ran_out() -> bool {
    WAKEUP_BLOCKS_RAN_OUT.get().load(Ordering::SeqCst) != 0
}

/// Database `db` is gone: its block of wake-up slots (if any) is free again, counters reset.
pub fn free_wakeup_block(db: pg_sys::Oid) {
    if !available() {
        return;
    }
    if let Some(i) = wakeup_block(db, false) {
        for slot in 0..WAKEUP_SLOTS {
            IDLE_EPISODES.get()[i][slot].store(0, Ordering::SeqCst);
            ANSWERED_EPISODES.get()[i][slot].store(0, Ordering::SeqCst);
        }
        WAKEUP_BLOCK_OWNERS.get()[i].store(0, Ordering::SeqCst);
    }
}

/// The wake-up protocol's counters of one slot of a block: (idle episodes, answered episodes).
pub fn wakeup_counters(block: usize, slot: usize) -> (&'static AtomicU64, &'static AtomicU64) {
    (
        &IDLE_EPISODES.get()[block][slot],
        &ANSWERED_EPISODES.get()[block][slot],
    )
}

#[pg_guard]
unsafe extern "C-unwind" fn unregister_process(_code: i32, slot: pg_sys::Datum) {
    let i = slot.value();
    WAKE_AT.get()[i].store(0, Ordering::SeqCst);
    KINDS.get()[i].store(0, Ordering::SeqCst);
    PROCESSES.get()[i].store(0, Ordering::SeqCst);
}

/// The worker processes serving `db`: (pid, kind).
pub fn processes_of(db: pg_sys::Oid) -> Vec<(i32, Kind)> {
    if !available() {
        return Vec::new();
    }
    let kinds = KINDS.get();
    PROCESSES
        .get()
        .iter()
        .zip(kinds.iter())
        .filter_map(|(slot, kind)| {
            let entry = slot.load(Ordering::SeqCst);
            let kind = match kind.load(Ordering::SeqCst) {
                1 => Kind::Scheduler,
                2 => Kind::Executor,
                3 => Kind::Sender,
                _ => return None,
            };
            (entry != 0 && db_of(entry) == db.to_u32()).then_some((entry as u32 as i32, kind))
        })
        .collect()
}

/// Sends `signal` to every worker process of `db` that is still that database's backend
/// (a recycled pid belonging to someone else is left alone).
pub fn signal_processes_of(db: pg_sys::Oid, signal: i32) {
    for (pid, _) in processes_of(db) {
        // SAFETY: BackendPidGetProc reads the proc array; the pid check guards against reuse.
        unsafe {
            let proc_ = pg_sys::BackendPidGetProc(pid);
            if !proc_.is_null() && (*proc_).databaseId == db {
                libc::kill(pid, signal);
            }
        }
    }
}

pub fn set_launcher_pid(pid: i32) {
    LAUNCHER_PID.get().store(pid as u64, Ordering::SeqCst);
}

fn wake_launcher() {
    let pid = LAUNCHER_PID.get().load(Ordering::SeqCst) as i32;
    if pid > 0 {
        // SAFETY: SIGUSR1 only sets a latch; harmless should the pid be stale.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
    }
}

/// Asks the launcher to (re)start the scheduler of `db`.
pub fn request_service(db: pg_sys::Oid) {
    if available() {
        // When the table is full the launcher's periodic scan still finds the database.
        insert(SERVICE_REQUESTS.get(), pack(db, 0));
        wake_launcher();
    }
}

/// Drains the set of databases whose scheduler should be started.
pub fn take_service_requests() -> Vec<u32> {
    drain(SERVICE_REQUESTS.get())
}

/// Said by a scheduler that found no extension in its database, before it exits.
pub fn decline(db: pg_sys::Oid) {
    insert(DECLINED.get(), pack(db, 0));
}

pub fn take_declined() -> Vec<u32> {
    drain(DECLINED.get())
}

fn drain<const N: usize>(slots: &Slots<N>) -> Vec<u32> {
    slots
        .iter()
        .map(|slot| slot.swap(0, Ordering::SeqCst))
        .filter(|&entry| entry != 0)
        .map(db_of)
        .collect()
}

/// `DROP DATABASE db` is about to run: stop serving it.
pub fn mark_dropping(db: pg_sys::Oid) {
    let slots = DROPPING.get();
    let now = now_seconds();
    // Reuse an expired entry, or this database's own, or a free one.
    for slot in slots.iter() {
        let entry = slot.load(Ordering::SeqCst);
        let expired = entry != 0 && now.saturating_sub(entry & 0xffff_ffff) > DROP_HOLD_SECONDS;
        if (entry == 0 || expired || db_of(entry) == db.to_u32())
            && slot
                .compare_exchange(
                    entry,
                    pack(db, now as u32),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            return;
        }
    }
}

/// The `DROP DATABASE` of `db` failed.
pub fn unmark_dropping(db: pg_sys::Oid) {
    for slot in DROPPING.get().iter() {
        let entry = slot.load(Ordering::SeqCst);
        if entry != 0 && db_of(entry) == db.to_u32() {
            let _ = slot.compare_exchange(entry, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

pub fn is_dropping(db: u32) -> bool {
    let now = now_seconds();
    DROPPING.get().iter().any(|slot| {
        let entry = slot.load(Ordering::SeqCst);
        entry != 0
            && db_of(entry) == db
            && now.saturating_sub(entry & 0xffff_ffff) <= DROP_HOLD_SECONDS
    })
}

/// Wakes the current database's processes of one kind (sets their latches).
pub fn wake(kind: Kind) {
    if !available() {
        return;
    }
    // SAFETY: MyDatabaseId is set at backend start.
    let db = unsafe { pg_sys::MyDatabaseId };
    for (pid, _) in processes_of(db).into_iter().filter(|&(_, k)| k == kind) {
        // SAFETY: SIGUSR1 only sets the latch of a backend (procsignal handler).
        unsafe { libc::kill(pid, libc::SIGUSR1) };
    }
}
