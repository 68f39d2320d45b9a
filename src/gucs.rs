//! Settings under the reserved `pg_jobqueue.` prefix, all in one place.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// How often (milliseconds) one session's `dequeue` on a queue also looks for stalled jobs.
pub static RESCUE_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// Called from `_PG_init`.
pub fn init() {
    GucRegistry::define_int_guc(
        c"pg_jobqueue.rescue_interval",
        c"How often a session's dequeue also rescues the queue's stalled jobs.",
        c"A job whose lease expired is taken back by a dequeue on its queue; each session looks at \
          most this often per queue, because the lease index holds the entries of every recently \
          finished job until vacuum removes them. 0 looks on every dequeue.",
        &RESCUE_INTERVAL_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    // SAFETY: a constant C string; reserves the prefix so typos in settings are reported.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pg_jobqueue".as_ptr()) };
}
