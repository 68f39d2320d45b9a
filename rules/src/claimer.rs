//! The name a worker process claims jobs under (their `claimed_by`), written and read here
//! alone: the executors and the sender write it, and the scheduler finds the jobs of
//! processes that are gone by the process id in it (`job._expire_executor_leases`, through
//! the SQL function `job._claimer_pid`, over [`claimer_pid`]).  The format has been the same since 0.3.0; jobs claimed by a release
//! before an upgrade are read back the same way.

/// A worker process that claims jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimer {
    /// An executor serving role `run_as` (its oid), by its index among that role's.
    Executor { run_as: u32, index: usize },
    /// The sender of HTTP deliveries.
    Sender,
}

/// What ends every name, and what the pid is read back from.
const PID_OPENS: &str = "(pid ";

/// The `claimed_by` of `claimer` running as process `pid`: "pg_jobqueue executor 16384/0
/// (pid 4242)", "pg_jobqueue sender (pid 4243)".
pub fn claimed_by(claimer: Claimer, pid: i32) -> String {
    match claimer {
        Claimer::Executor { run_as, index } => {
            format!("pg_jobqueue executor {run_as}/{index} {PID_OPENS}{pid})")
        }
        Claimer::Sender => format!("pg_jobqueue sender {PID_OPENS}{pid})"),
    }
}

/// The process id in a `claimed_by` that [`claimed_by`] wrote; None for any other claimer
/// (a client's worker names itself as it likes).  As lenient as the pattern the scheduler's
/// SQL read it with before (an executor's or the sender's prefix, the pid at the end), but
/// a number too large for a pid is no pid rather than an error.
pub fn claimer_pid(claimed_by: &str) -> Option<i32> {
    let rest = claimed_by.strip_prefix("pg_jobqueue ")?;
    if !(rest.starts_with("executor ") || rest.starts_with("sender ")) {
        return None;
    }
    let (_, digits) = claimed_by.strip_suffix(')')?.rsplit_once(PID_OPENS)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claimer_reads_back_its_pid() {
        for claimer in [
            Claimer::Sender,
            Claimer::Executor {
                run_as: 16384,
                index: 0,
            },
            Claimer::Executor {
                run_as: u32::MAX,
                index: 31,
            },
        ] {
            for pid in [1, 4242, i32::MAX] {
                let name = claimed_by(claimer, pid);
                assert!(name.starts_with("pg_jobqueue "), "{name}");
                assert_eq!(claimer_pid(&name), Some(pid), "{name}");
            }
        }
        assert_eq!(
            claimed_by(
                Claimer::Executor {
                    run_as: 10,
                    index: 2
                },
                77
            ),
            "pg_jobqueue executor 10/2 (pid 77)"
        );
        assert_eq!(
            claimed_by(Claimer::Sender, 78),
            "pg_jobqueue sender (pid 78)"
        );
    }

    #[test]
    fn other_claimers_have_no_pid() {
        for name in [
            "",
            "worker-1",
            "my worker (pid 12)",
            "pg_jobqueue scheduler (pid 12)",
            "pg_jobqueue sender (pid )",
            "pg_jobqueue sender (pid 12",
            "pg_jobqueue sender (pid -12)",
            "pg_jobqueue sender (pid 1 2)",
            "pg_jobqueue sender (pid 99999999999)",
        ] {
            assert_eq!(claimer_pid(name), None, "{name}");
        }
    }
}
