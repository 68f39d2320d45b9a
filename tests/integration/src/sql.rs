//! Running SQL in a test: statements that must succeed (panicking with the server's error,
//! which `postgres::Error`'s Display does not show), single values, and statements that must
//! be refused (their SQLSTATE).

use crate::{error_text, Client, Error, SqlState};
use postgres::types::{FromSqlOwned, ToSql};
use postgres::GenericClient;

/// SQLSTATE 42501, insufficient_privilege: what a role is told when it may not do something.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Runs SQL statements (no parameters, no rows), panicking with the server's error.
pub fn exec(client: &mut impl GenericClient, sql: &str) {
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {}", error_text(&e)));
}

/// Runs one statement with parameters (its rows ignored), panicking with the server's error.
pub fn execute(client: &mut impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) {
    client
        .execute(sql, params)
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {}", error_text(&e)));
}

/// The single value of a one-row, one-column query, panicking with the server's error.
pub fn one<T: FromSqlOwned>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> T {
    client
        .query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {}", error_text(&e)))
        .get(0)
}

/// The values of a one-column query, panicking with the server's error.
pub fn column<T: FromSqlOwned>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<T> {
    rows::<(T,)>(client, sql, params)
        .into_iter()
        .map(|(value,)| value)
        .collect()
}

/// The SQLSTATE of a failed call, panicking if it succeeded, failed without a SQLSTATE or
/// failed with an internal error (XX000: a bug, never a refusal).
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) -> SqlState {
    match result {
        Ok(v) => panic!("{what} succeeded ({v:?}); it should have been refused"),
        Err(e) => {
            let code = e
                .code()
                .unwrap_or_else(|| panic!("{what}: not a server error: {}", error_text(&e)))
                .clone();
            assert_ne!(
                code,
                SqlState::INTERNAL_ERROR,
                "{what}: internal error (XX000): {}",
                error_text(&e)
            );
            code
        }
    }
}

/// The call must fail with SQLSTATE `code`; `what` says what it was (its failure message).
pub fn assert_refused<T: std::fmt::Debug>(result: Result<T, Error>, code: &SqlState, what: &str) {
    match result {
        Ok(v) => panic!(
            "{what} succeeded ({v:?}); it must fail with {}",
            code.code()
        ),
        Err(e) => assert_eq!(e.code(), Some(code), "{what}: {}", error_text(&e)),
    }
}

/// The SQLSTATE of statements that must fail (see [`sqlstate`]), as text.
pub fn error_code(client: &mut Client, sql: &str) -> String {
    sqlstate(client.batch_execute(sql), sql).code().to_owned()
}

/// The SQLSTATE of one statement with parameters that must fail (see [`sqlstate`]), as text.
pub fn error_code_with(client: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
    sqlstate(client.execute(sql, params), sql).code().to_owned()
}

/// The statements must fail with SQLSTATE 42501 (insufficient_privilege).
pub fn denied(client: &mut Client, sql: &str) {
    match client.batch_execute(sql) {
        Ok(()) => panic!("{sql}\nsucceeded; it must fail with permission denied (42501)"),
        Err(e) => assert_eq!(
            e.code().map(|c| c.code()),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}\nmust fail with permission denied (42501), failed with: {}",
            error_text(&e)
        ),
    }
}

/// A row as a tuple of its columns' values: `(A,)` to `(A, B, C, D, E, F, G)`.
pub trait FromRow: Sized {
    fn from_row(row: &postgres::Row) -> Self;
}

macro_rules! from_row_tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromSqlOwned),+> FromRow for ($($t,)+) {
            fn from_row(row: &postgres::Row) -> Self {
                ($(row.get::<_, $t>($i),)+)
            }
        }
    };
}
from_row_tuple!(A 0);
from_row_tuple!(A 0, B 1);
from_row_tuple!(A 0, B 1, C 2);
from_row_tuple!(A 0, B 1, C 2, D 3);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);

/// The one row of a query, as a tuple, panicking with the server's error.
pub fn one_row<T: FromRow>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> T {
    T::from_row(
        &client
            .query_one(sql, params)
            .unwrap_or_else(|e| panic!("{sql}\nfailed: {}", error_text(&e))),
    )
}

/// The rows of a query, as tuples, panicking with the server's error.
pub fn rows<T: FromRow>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<T> {
    client
        .query(sql, params)
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {}", error_text(&e)))
        .iter()
        .map(T::from_row)
        .collect()
}
