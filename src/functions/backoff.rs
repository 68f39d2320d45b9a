//! The SQL face of the retry delay rule (pg_jobqueue_rules::backoff): `job.retry_delay`.

use pg_jobqueue_rules::backoff::retry_delay_micros;
use pgrx::datum::Interval;
use pgrx::prelude::*;

fn invalid(message: String) -> ! {
    crate::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, "")
}

fn positive_micros(name: &str, value: Interval) -> i64 {
    let micros = value.as_micros();
    if micros <= 0 {
        invalid(format!("{name} must be a positive interval, got {value}"));
    }
    micros.min(i64::MAX as i128) as i64
}

/// SQL: the delay `job.fail` waits before the next attempt, with a fresh jitter draw.
#[pg_extern(volatile, parallel_safe)]
fn retry_delay(
    attempt: i32,
    backoff_base: Interval,
    backoff_max: Interval,
    jitter: f64,
) -> Interval {
    if attempt < 1 {
        invalid(format!("attempt must be 1 or more, got {attempt}"));
    }
    let base = positive_micros("backoff_base", backoff_base);
    let max = positive_micros("backoff_max", backoff_max);
    if max < base {
        invalid(format!(
            "backoff_max ({backoff_max}) must not be less than backoff_base ({backoff_base})"
        ));
    }
    if !(0.0..=1.0).contains(&jitter) {
        invalid(format!("jitter must be between 0 and 1, got {jitter}"));
    }
    // SAFETY: the backend-global PRNG, seeded by PostgreSQL at backend start (14 has no
    // pg_prng: it seeds the C library's random() per backend instead).
    #[cfg(not(feature = "pg14"))]
    let unit = unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) };
    #[cfg(feature = "pg14")]
    let unit = {
        extern "C" {
            fn random() -> libc::c_long; // POSIX; 0 to 2^31 - 1
        }
        (unsafe { random() }) as f64 / (i32::MAX as f64 + 1.0)
    };
    Interval::from_micros(retry_delay_micros(attempt, base, max, jitter, unit))
}
