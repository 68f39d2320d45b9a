//! Metrics helpers: fixed-layout duration histograms, the writer shard, and the per-session
//! throttle for recording that a worker was seen.
//!
//! Durations are counted in log-scale buckets (factor √2 from 1 ms), so a histogram is a
//! fixed-length `bigint[]` that rollup rows can add element-wise, and a quantile comes out
//! within its bucket (a factor of √2) at any volume.

use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Upper bound of bucket 0 (seconds); bucket k covers (FIRST·√2^(k-1), FIRST·√2^k].
const FIRST_BOUND: f64 = 0.001;
/// Buckets up to 1 ms · √2^48 ≈ 4.7 hours, and one for everything longer.
pub const BUCKETS: usize = 50;

/// Upper bound (seconds) of bucket `k`; the last bucket is unbounded.
pub fn bucket_bound(k: usize) -> f64 {
    if k + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        // 2^(k/2) is exact and each product rounds once, so every build computes the same
        // bound: `SQRT_2.powi(k)` came out one ulp apart when the compiler folded one call
        // and not another (seen at opt-level 1 on 14 and 16), putting a quantile past its bucket.
        let whole = FIRST_BOUND * (1u64 << (k / 2)) as f64;
        if k % 2 == 1 {
            whole * std::f64::consts::SQRT_2
        } else {
            whole
        }
    }
}

/// The bucket a duration of `seconds` falls in.
pub fn bucket_of(seconds: f64) -> usize {
    if seconds.is_nan() || seconds <= FIRST_BOUND {
        return 0; // also negative durations (clock steps)
    }
    let k = (2.0 * (seconds / FIRST_BOUND).log2()).ceil() as usize;
    // log2 can round either way at a bound: the bounds themselves decide.
    let k = if k > 0 && seconds <= bucket_bound(k - 1) {
        k - 1
    } else if k + 1 < BUCKETS && seconds > bucket_bound(k) {
        k + 1
    } else {
        k
    };
    k.min(BUCKETS - 1)
}

/// The `q` quantile of a histogram: the rank's bucket, interpolated geometrically inside it.
/// None for an empty histogram.
pub fn quantile(hist: &[i64], q: f64) -> Option<f64> {
    let total: i64 = hist.iter().map(|&c| c.max(0)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0.0;
    for (k, &count) in hist.iter().enumerate().take(BUCKETS) {
        let count = count.max(0) as f64;
        if count > 0.0 && seen + count >= rank {
            let upper = bucket_bound(k);
            let lower = if k == 0 { 0.0 } else { bucket_bound(k - 1) };
            if k == 0 {
                return Some(upper * (rank - seen) / count);
            }
            if upper.is_infinite() {
                return Some(lower);
            }
            let fraction = (rank - seen) / count;
            // Clamped: lower · (upper / lower)^1 can round one ulp past the bucket's bound
            // (it did in an optimized build).
            return Some((lower * (upper / lower).powf(fraction)).clamp(lower, upper));
        }
        seen += count;
    }
    Some(bucket_bound(BUCKETS - 2))
}

/// SQL (internal): a histogram holding one duration.
#[pg_extern(immutable, parallel_safe)]
fn _hist_of(seconds: Option<f64>) -> Vec<i64> {
    let mut hist = vec![0; BUCKETS];
    if let Some(s) = seconds {
        hist[bucket_of(s)] = 1;
    }
    hist
}

/// SQL (internal): the 1-based array index of the bucket a duration falls in.
#[pg_extern(immutable, parallel_safe)]
fn _hist_bucket(seconds: Option<f64>) -> i32 {
    bucket_of(seconds.unwrap_or(0.0)) as i32 + 1
}

/// SQL (internal): element-wise sum of two histograms (NULL counts as empty).
#[pg_extern(immutable, parallel_safe)]
fn _hist_add(a: Option<Vec<Option<i64>>>, b: Option<Vec<Option<i64>>>) -> Vec<i64> {
    let mut sum = vec![0i64; BUCKETS];
    for hist in [a, b].into_iter().flatten() {
        for (slot, count) in sum.iter_mut().zip(hist) {
            *slot += count.unwrap_or(0);
        }
    }
    sum
}

/// SQL (internal): the `q` quantile (seconds) of a histogram, NULL when it is empty (or
/// either argument is NULL).
#[pg_extern(immutable, parallel_safe)]
fn _hist_quantile(hist: Option<Vec<Option<i64>>>, q: Option<f64>) -> Option<f64> {
    let hist: Vec<i64> = hist?.into_iter().map(|c| c.unwrap_or(0)).collect();
    quantile(&hist, q?)
}

/// SQL (internal): which rollup row this backend writes.  Backend ids are dense, so
/// concurrent writers of one queue land on different rows and never wait for each other.
#[pg_extern(stable, parallel_safe)]
fn _writer_shard() -> i16 {
    // SAFETY: set once at backend start.  (PostgreSQL 17 renamed the backend's slot number.)
    #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
    let slot = unsafe { pg_sys::MyBackendId };
    #[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
    let slot = unsafe { pg_sys::MyProcNumber };
    (slot % 32) as i16
}

thread_local! {
    static LAST_SEEN: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
}

/// How often one session records the same worker as seen.
const SEEN_INTERVAL: Duration = Duration::from_secs(1);

/// SQL (internal): should this session record `worker` as seen now?  At most once a second
/// per session and worker, so that a busy worker costs one small update per second.
#[pg_extern(volatile, parallel_unsafe)]
fn _worker_seen_due(worker: &str) -> bool {
    let now = Instant::now();
    LAST_SEEN.with_borrow_mut(|seen| match seen.get(worker) {
        Some(last) if now.saturating_duration_since(*last) < SEEN_INTERVAL => false,
        _ => {
            if seen.len() > 10_000 {
                seen.clear(); // a session cycling through names must not grow without bound
            }
            seen.insert(worker.to_owned(), now);
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_scale_and_cover_every_duration() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(-3.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(0.001), 0);
        assert_eq!(bucket_of(0.0012), 1);
        assert_eq!(bucket_of(0.002), 2);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        for k in 1..BUCKETS - 1 {
            let bound = bucket_bound(k);
            assert_eq!(bucket_of(bound), k, "upper bound belongs to its bucket");
            assert_eq!(bucket_of(bound * 1.0001), k + 1);
            let just_above = f64::from_bits(bound.to_bits() + 1);
            assert_eq!(bucket_of(just_above), k + 1, "one ulp above bound {k}");
            // The same bound whether or not the compiler knows k.
            assert_eq!(bucket_bound(std::hint::black_box(k)), bound);
        }
    }

    #[test]
    fn quantiles_come_out_within_a_bucket() {
        let mut hist = vec![0i64; BUCKETS];
        // 1..=1000 ms, uniformly.
        for ms in 1..=1000 {
            hist[bucket_of(ms as f64 / 1000.0)] += 1;
        }
        for (q, exact) in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99)] {
            let got = quantile(&hist, q).unwrap();
            let ratio = got / exact;
            assert!(
                (1.0 / 1.42..1.42).contains(&ratio),
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(quantile(&vec![0; BUCKETS], 0.5), None);
        let mut one = vec![0i64; BUCKETS];
        one[bucket_of(3.0)] = 1;
        let q = quantile(&one, 0.99).unwrap();
        assert!(q > bucket_bound(bucket_of(3.0) - 1) && q <= bucket_bound(bucket_of(3.0)));
    }
}
