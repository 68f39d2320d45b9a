//! Retry delays: exponential backoff with jitter.
//!
//! The rule (after the k-th failed attempt, k = 1, 2, …):
//! `min(backoff_max, backoff_base × 2^(k−1)) × (1 + u)`, u uniform in [−jitter, +jitter].

/// Microseconds to wait before retrying after the `attempt`-th failed attempt.
///
/// `unit` is a uniform draw in [0, 1); it is mapped onto u ∈ [−jitter, +jitter] so that this
/// function stays deterministic and testable.
pub fn retry_delay_micros(attempt: i32, base: i64, max: i64, jitter: f64, unit: f64) -> i64 {
    debug_assert!(attempt >= 1 && base > 0 && max >= base && (0.0..=1.0).contains(&jitter));
    // 2^62 × base overflows anything; the cap is reached long before, so saturate.
    let doublings = (attempt.max(1) - 1).min(62) as u32;
    let grown = (base as i128) << doublings;
    let capped = grown.min(max as i128) as f64;
    let u = jitter * (2.0 * unit - 1.0);
    (capped * (1.0 + u)).round().max(0.0) as i64
}

#[cfg(test)]
mod tests {
    use super::retry_delay_micros;
    const S: i64 = 1_000_000;

    #[test]
    fn doubles_from_base_until_the_cap() {
        let delays: Vec<i64> = (1..=8)
            .map(|k| retry_delay_micros(k, S, 60 * S, 0.0, 0.5))
            .collect();
        assert_eq!(
            delays,
            vec![S, 2 * S, 4 * S, 8 * S, 16 * S, 32 * S, 60 * S, 60 * S]
        );
    }

    #[test]
    fn default_five_retries_wait_31_seconds_in_all() {
        let total: i64 = (1..=5)
            .map(|k| retry_delay_micros(k, S, 60 * S, 0.0, 0.5))
            .sum();
        assert_eq!(total, 31 * S);
    }

    #[test]
    fn jitter_spans_plus_and_minus_its_fraction() {
        assert_eq!(retry_delay_micros(1, 10 * S, 60 * S, 0.1, 0.0), 9 * S);
        assert_eq!(retry_delay_micros(1, 10 * S, 60 * S, 0.1, 0.5), 10 * S);
        let high = retry_delay_micros(1, 10 * S, 60 * S, 0.1, 0.999_999);
        assert!(high > 10 * S && high <= 11 * S, "{high}");
    }

    #[test]
    fn jitter_applies_to_the_capped_delay() {
        assert_eq!(retry_delay_micros(20, S, 60 * S, 0.5, 0.0), 30 * S);
    }

    #[test]
    fn huge_attempt_numbers_saturate_instead_of_overflowing() {
        assert_eq!(
            retry_delay_micros(i32::MAX, S, 3600 * S, 0.0, 0.5),
            3600 * S
        );
        const DAY: i64 = 86_400 * S;
        assert_eq!(retry_delay_micros(100, DAY, 30 * DAY, 0.0, 0.5), 30 * DAY);
    }
}
