//! Settings under the reserved `pg_jobqueue.` prefix, all in one place.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// How often (milliseconds) one session's `dequeue` on a queue also looks for stalled jobs.
pub static RESCUE_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Whether the background worker runs at all.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Executor processes per database that has handlers.
pub static EXECUTORS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// The most handler jobs an executor runs in one transaction.
pub static EXECUTOR_BATCH: GucSetting<i32> = GucSetting::<i32>::new(100);
/// The longest the scheduler sleeps without looking at its tables (milliseconds).
pub static SCHEDULER_TICK_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// How often the scheduler runs maintenance (milliseconds).
pub static MAINTENANCE_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(5000);
/// Rows one maintenance transaction touches at most.
pub static MAINTENANCE_BATCH: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Fired ticks kept per schedule in job.schedule_runs.
pub static SCHEDULE_HISTORY: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Days the audit log keeps its rows.
pub static AUDIT_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(90);
/// How late a tick may fire under misfire = 'skip' (milliseconds); read by SQL.
pub static MISFIRE_GRACE_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);

/// How far ahead an enqueue may start a job (minutes); read by SQL (job._check_at_most).
pub static MAX_DELAY_MIN: GucSetting<i32> = GucSetting::<i32>::new(365 * 24 * 60);
/// The longest debounce and debounce_max_wait of an enqueue (seconds); read by SQL.
pub static MAX_DEBOUNCE_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// The longest hold job.rate_limit_pause sets (seconds); read by SQL.
pub static MAX_HOLD_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);

/// The most HTTP requests the sender of a database has in flight at once.
pub static HTTP_MAX_IN_FLIGHT: GucSetting<i32> = GucSetting::<i32>::new(256);
/// The most bytes of a 2xx answer's body kept in a delivery's result.
pub static HTTP_MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(65536);
/// The longest `Retry-After` the sender honours (seconds); longer ones are cut to it.
pub static HTTP_MAX_RETRY_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// Consecutive failed attempts after which an endpoint is disabled.
pub static HTTP_DISABLE_AFTER: GucSetting<i32> = GucSetting::<i32>::new(100);
/// Addresses the sender never connects to (CIDR blocks, comma-separated).
pub static HTTP_DENY: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(
        pg_jobqueue_rules::delivery::address::DEFAULT_DENY,
    ));
/// When set, the only addresses the sender connects to.
pub static HTTP_ALLOW: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

/// A string setting's value (None when unset or empty).
pub fn string(setting: &GucSetting<Option<std::ffi::CString>>) -> Option<String> {
    setting
        .get()
        .map(|v| v.to_string_lossy().trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn int(
    name: &'static std::ffi::CStr,
    short: &'static std::ffi::CStr,
    long: &'static std::ffi::CStr,
    setting: &'static GucSetting<i32>,
    range: (i32, i32),
    context: GucContext,
    flags: GucFlags,
) {
    GucRegistry::define_int_guc(name, short, long, setting, range.0, range.1, context, flags);
}

/// Called from `_PG_init`.
pub fn init() {
    int(
        c"pg_jobqueue.rescue_interval",
        c"How often a session's dequeue also rescues the queue's stalled jobs.",
        c"A job whose lease expired is taken back by a dequeue on its queue where the background \
          worker does not take it back; each session looks at most this often per queue, because \
          the lease index holds the entries of every recently finished job until vacuum removes \
          them. 0 looks on every dequeue, worker or not.",
        &RESCUE_INTERVAL_MS,
        (0, 3_600_000),
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"pg_jobqueue.enabled",
        c"Whether the pg_jobqueue background worker fires schedules, runs handlers and maintenance.",
        c"Off stops the worker's schedulers and executors; jobs can still be enqueued and dequeued.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.executors",
        c"Executor processes per database that has handlers.",
        c"Each runs one handler job at a time; 0 runs no handler jobs. Counts against max_worker_processes.",
        &EXECUTORS,
        (0, 64),
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.executor_batch",
        c"The most handler jobs an executor runs in one transaction.",
        c"An executor claims up to this many jobs of one handler queue (within its concurrency), \
          runs each handler call in a subtransaction of its own and commits them together: one \
          commit for the batch instead of one per job. It sizes each batch to take about 50 ms, \
          so slow handlers run one at a time. 1 runs one job per transaction.",
        &EXECUTOR_BATCH,
        (1, 1000),
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.scheduler_tick",
        c"The longest the scheduler sleeps between looks at its schedules.",
        c"The scheduler wakes when the next schedule is due, and at least this often to notice new ones.",
        &SCHEDULER_TICK_MS,
        (10, 60_000),
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    int(
        c"pg_jobqueue.maintenance_interval",
        c"How often the worker rescues stalled jobs, applies retention and prunes schedule history.",
        c"",
        &MAINTENANCE_INTERVAL_MS,
        (100, 3_600_000),
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    int(
        c"pg_jobqueue.maintenance_batch",
        c"The most rows one maintenance transaction deletes or moves.",
        c"",
        &MAINTENANCE_BATCH,
        (1, 1_000_000),
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.schedule_history",
        c"How many fired ticks job.schedule_runs keeps per schedule.",
        c"",
        &SCHEDULE_HISTORY,
        (1, 1_000_000),
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.misfire_grace",
        c"How late a tick may still fire when its schedule's misfire is 'skip'.",
        c"Of the ticks a schedule missed (the server was down, say), only the latest can fire: with \
          misfire = 'skip' only if it is at most this late, with 'catch_up' always.",
        &MISFIRE_GRACE_MS,
        (0, i32::MAX),
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // The three bounds below limit what one role's call does to others' jobs; only a
    // superuser may change them (in postgresql.conf, or ALTER DATABASE/ROLE ... SET).
    int(
        c"pg_jobqueue.max_delay",
        c"How far ahead an enqueue may start a job (run_at or delay).",
        c"A job due later is refused (22023). A job due far ahead holds its order key, or its \
          singleton's place, for as long. At most 100 years.",
        &MAX_DELAY_MIN,
        (1, 100 * 365 * 24 * 60),
        GucContext::Suset,
        GucFlags::UNIT_MIN,
    );
    int(
        c"pg_jobqueue.max_debounce",
        c"The longest debounce and debounce_max_wait an enqueue may give.",
        c"A longer one is refused (22023). At most 30 days.",
        &MAX_DEBOUNCE_S,
        (1, 30 * 86_400),
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    int(
        c"pg_jobqueue.max_hold",
        c"The longest hold job.rate_limit_pause may set.",
        c"A later until is refused (22023): a hold stops every claim of its queue or key. At most 30 days.",
        &MAX_HOLD_S,
        (1, 30 * 86_400),
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    int(
        c"pg_jobqueue.audit_retention",
        c"Days job.audit_log keeps its rows before the worker deletes them.",
        c"",
        &AUDIT_RETENTION_DAYS,
        (1, 36_500),
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.http_max_in_flight",
        c"The most HTTP requests the sender of a database has in flight at once.",
        c"Each endpoint also keeps within its own concurrency and rate_limit.",
        &HTTP_MAX_IN_FLIGHT,
        (1, 10_000),
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"pg_jobqueue.http_max_response_bytes",
        c"The most bytes of a successful answer's body kept in a delivery's result.",
        c"Longer bodies are cut (body_truncated in the result). 0 keeps none.",
        &HTTP_MAX_RESPONSE_BYTES,
        (0, 16 * 1024 * 1024),
        GucContext::Sighup,
        GucFlags::UNIT_BYTE,
    );
    int(
        c"pg_jobqueue.http_max_retry_after",
        c"The longest Retry-After the sender honours.",
        c"A longer Retry-After (delta-seconds or HTTP-date) is cut to this.",
        &HTTP_MAX_RETRY_AFTER_S,
        (0, i32::MAX),
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    int(
        c"pg_jobqueue.http_disable_after",
        c"Consecutive failed attempts after which an endpoint is disabled (audited).",
        c"A disabled endpoint sends nothing until job.resume_endpoint.",
        &HTTP_DISABLE_AFTER,
        (1, 1_000_000),
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_jobqueue.http_deny",
        c"Addresses the sender never connects to: IP addresses or CIDR blocks, comma-separated.",
        c"Checked on every resolved address of every request. The default holds the link-local \
          blocks (cloud metadata at 169.254.169.254) and the other cloud metadata addresses.",
        &HTTP_DENY,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_jobqueue.http_allow",
        c"When set, the only addresses the sender connects to: IP addresses or CIDR blocks.",
        c"pg_jobqueue.http_deny still applies within it.",
        &HTTP_ALLOW,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: a constant C string; reserves the prefix so typos in settings are reported
    // (14 only warns of them).
    #[cfg(not(feature = "pg14"))]
    unsafe {
        pgrx::pg_sys::MarkGUCPrefixReserved(c"pg_jobqueue".as_ptr())
    };
    #[cfg(feature = "pg14")]
    unsafe {
        pgrx::pg_sys::EmitWarningsOnPlaceholders(c"pg_jobqueue".as_ptr())
    };
}
