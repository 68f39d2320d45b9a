//! Where the worker's processes sleep: on their latch (set by SIGTERM, SIGHUP and the
//! commit-time wake-ups), and for the sender also on a pipe its HTTP threads write to
//! ([`Bell`]).  One wait for both, so that what must happen on every wake-up (cancels dropped,
//! interrupts served, the postmaster's death noticed) is written once.

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Sleeps on the latch for at most `timeout`; false when the worker must stop (SIGTERM).
/// The process exits at once should the postmaster die.
pub fn sleep(timeout: Duration) -> bool {
    wait_latch(timeout, None)
}

/// Sleeps until the latch is set, `socket` (if any) is readable or `timeout` passes; false
/// when the worker must stop (SIGTERM).
fn wait_latch(timeout: Duration, socket: Option<RawFd>) -> bool {
    // Rounded up: waking a fraction of a millisecond before a tick finds nothing due yet.
    let millis = timeout
        .as_micros()
        .div_ceil(1000)
        .clamp(1, i32::MAX as u128) as std::ffi::c_long;
    let events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    // SAFETY: the standard latch wait of a background worker (WaitLatch uses the process's
    // own wait set; with a socket, a set is made for the call).
    unsafe {
        match socket {
            None => pg_sys::WaitLatch(
                pg_sys::MyLatch,
                events as i32,
                millis,
                pg_sys::PG_WAIT_EXTENSION,
            ),
            Some(socket) => pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                (events | pg_sys::WL_SOCKET_READABLE) as i32,
                socket,
                millis,
                pg_sys::PG_WAIT_EXTENSION,
            ),
        };
        pg_sys::ResetLatch(pg_sys::MyLatch);
        // A cancel that arrives between units of work (DROP DATABASE sends one) has nothing
        // left to cancel; left pending it would fail the next, unrelated, statement.
        pg_sys::QueryCancelPending = 0;
        // Other interrupts must be served while idle: DROP DATABASE waits for every process
        // to absorb its ProcSignalBarrier.
        pg_sys::check_for_interrupts!();
    }
    !BackgroundWorker::sigterm_received()
}

/// A pipe the HTTP threads write a byte to when a request finished, so that the main thread
/// can sleep on its latch and the pipe at once.
pub struct Bell {
    read: OwnedFd,
    write: OwnedFd,
}

impl Bell {
    pub fn new() -> Option<Bell> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills fds on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created and are owned here alone.
        Some(unsafe {
            Bell {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    /// Called from any thread.  A full pipe already wakes the reader.
    pub fn ring(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a valid buffer to an open descriptor.
        unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }

    pub fn drain(&self) {
        let mut buf = [0u8; 256];
        // SAFETY: reads into a valid buffer from an open non-blocking descriptor.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }

    /// Sleeps until the bell rings, the latch is set or `timeout` passes; false when the
    /// process must stop.  Only from the main thread.
    pub fn wait(&self, timeout: Duration) -> bool {
        wait_latch(timeout, Some(self.read.as_raw_fd()))
    }
}
