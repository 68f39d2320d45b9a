//! Who is calling, and acting as another role for a moment.
//!
//! The extension's SQL functions are `SECURITY DEFINER`: inside them `current_user` is the
//! extension's owner.  Two things need more than that: the audit log names the role the
//! session acts as, and `set_handler` must know the role that called it (which is who may
//! name `run_as`).  Rust functions that are not `SECURITY DEFINER` see the caller directly.

use pgrx::prelude::*;

/// SQL (internal): the session's current role (the login role, or the one chosen with
/// `SET ROLE`), whatever `SECURITY DEFINER` functions stand between it and this call.
#[pg_extern(stable)]
fn _calling_role() -> String {
    // SAFETY: both read backend globals; the role exists while the session uses it.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false);
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Runs `body` as `role` with `search_path = pg_catalog, pg_temp`, the way a `SECURITY
/// DEFINER` function with a pinned path runs: nothing of the caller's search path can resolve
/// a name in what `body` runs.  The path is the caller's again afterwards.
pub fn as_owner<R>(owner: pg_sys::Oid, body: impl FnOnce() -> R) -> R {
    // SAFETY: a GUC nest level closed below; an error aborts the (sub)transaction, which
    // closes it.
    let nest_level = unsafe { pg_sys::NewGUCNestLevel() };
    let result = as_role(owner, || {
        Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
            .unwrap_or_else(|e| error!("{e}"));
        body()
    });
    // SAFETY: pairs with NewGUCNestLevel above.  `false`: every setting made at this level
    // goes back to its prior value (with `true`, a SET LOCAL would live on to the caller's
    // commit, and the caller's next statement would resolve names in pg_catalog alone).
    unsafe { pg_sys::AtEOXact_GUC(false, nest_level) };
    result
}

/// Runs `body` with `role` as the current user, the way a `SECURITY DEFINER` function does
/// (`SET ROLE` and `SET SESSION AUTHORIZATION` are refused meanwhile), then switches back.
/// Should `body` raise, the transaction's abort restores the user.
pub fn as_role<R>(role: pg_sys::Oid, body: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: the same switch fmgr makes for SECURITY DEFINER functions, undone below.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            role,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = body();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}

/// The role that owns the extension's function `signature` (a regprocedure text): the role
/// the extension's `SECURITY DEFINER` functions act as.
/// Runs under the caller's search_path, so every name and operator in it is qualified.
pub fn owner_of(signature: &str) -> pg_sys::Oid {
    Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT p.proowner FROM pg_catalog.pg_proc p
          WHERE p.oid OPERATOR(pg_catalog.=) $1::pg_catalog.regprocedure::pg_catalog.oid",
        &[signature.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| error!("pg_jobqueue: function {signature} is missing"))
}
