//! Server internals: shared memory, internal locks, wake-ups, settings, the utility hook, and
//! who is calling.

pub mod gucs;
pub mod handlers;
pub mod locks;
pub mod security;
pub mod shmem;
pub mod utility_hook;
pub mod wakeup;
