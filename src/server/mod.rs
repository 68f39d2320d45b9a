//! Server internals: shared memory, internal locks, wake-ups, settings, the utility hook, and
//! who is calling.

pub mod gucs;
pub mod handlers;
pub mod locks;
pub mod security;
pub mod shmem;
pub mod utility_hook;
pub mod wakeup;

/// Errors must read as PostgreSQL's whatever the server's environment: with RUST_BACKTRACE set
/// (a developer's shell often has it), pgrx appended a ~20-line Rust backtrace to the DETAIL
/// of every error that passed through Rust code, and the utility hook sees every DDL
/// statement of every database.  The standard library asks RUST_LIB_BACKTRACE first, once, at
/// the first capture; so this runs first in `_PG_init`, in the postmaster before it starts
/// anything when preloaded.  (Panics' own messages are not library captures: unaffected.)
pub fn keep_rust_backtraces_out_of_errors() {
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
}
