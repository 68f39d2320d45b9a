//! `job.set_handler`: who may make the worker run a function, and as whom.
//!
//! A handler runs with the rights of its `run_as` role, so naming a role is the same power
//! as acting as it: the caller must be a member of `run_as` (superusers are members of
//! every role).  That needs the calling role, which a `SECURITY DEFINER` function cannot see
//! (its `current_user` is the extension's owner).  So `set_handler` is this Rust function,
//! which runs as the caller, reads the caller, and then records the handler through the
//! internal `job._set_handler` as the extension's owner; nobody else may call that one.

use crate::server::security::{as_owner, owner_of};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::Interval;
use pgrx::nullable::Nullable;
use pgrx::prelude::*;

/// Declares a Rust type for one of PostgreSQL's OID alias types (`regprocedure`, `regrole`),
/// so a function can take it as an argument: the SQL type does the name lookup, in the
/// caller's search_path, and the function receives the OID.
macro_rules! oid_alias {
    ($name:ident, $sql:literal) => {
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub pg_sys::Oid);

        impl FromDatum for $name {
            unsafe fn from_polymorphic_datum(
                datum: pg_sys::Datum,
                is_null: bool,
                _typoid: pg_sys::Oid,
            ) -> Option<Self> {
                (!is_null).then(|| $name(pg_sys::Oid::from(datum.value() as u32)))
            }
        }

        pgrx::impl_sql_translatable!($name, arg_only = $sql);

        // SAFETY: an OID alias is passed by value as an Oid, as FromDatum above reads it.
        unsafe impl<'fcx> ArgAbi<'fcx> for $name {
            unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }

            unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
                unsafe { arg.unbox_arg_using_from_datum() }.into()
            }
        }
    };
}

oid_alias!(RegProcedure, "regprocedure");
oid_alias!(RegRole, "regrole");

/// The internal function that records a handler, as a regprocedure.
const SET_HANDLER_IMPL: &str = "job._set_handler(pg_catalog.regrole, pg_catalog.text, \
     pg_catalog.regprocedure, pg_catalog.int4, pg_catalog.interval, pg_catalog.regrole)";

/// SQL: from now on the worker's executors run `queue`'s jobs by calling
/// `handler(payload jsonb)` as `run_as` (the caller by default, who must be a member of it),
/// at most `concurrency` at a time, each under `statement_timeout = timeout`.
#[pg_extern(volatile, parallel_unsafe)]
fn set_handler(
    queue: Option<&str>,
    handler: Option<RegProcedure>,
    concurrency: default!(Option<i32>, 1),
    timeout: default!(Option<Interval>, "'5 minutes'"),
    run_as: default!(Option<RegRole>, "NULL"),
) {
    // SAFETY: reads the current user: the role that called this function.
    let caller = unsafe { pg_sys::GetUserId() };
    let run_as = run_as.map_or(caller, |role| role.0);
    let owner = owner_of(SET_HANDLER_IMPL);
    as_owner(owner, || {
        Spi::run_with_args(
            "SELECT job._set_handler($1::pg_catalog.regrole, $2, $3::pg_catalog.regprocedure, $4, $5,
                                     $6::pg_catalog.regrole)",
            &[
                caller.into(),
                queue.into(),
                handler.map(|h| h.0).into(),
                concurrency.into(),
                timeout.into(),
                run_as.into(),
            ],
        )
    })
    .unwrap_or_else(|e| error!("{e}"));
}
