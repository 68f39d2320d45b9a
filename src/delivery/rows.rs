//! The rows that cross between the sender and SQL, read and written by name on both sides
//! (their composite types are in sql/tables.sql): a claimed delivery (`job._delivery_claim`,
//! from `job._claim_deliveries`), what an attempt came to (`job._delivery_outcome`) and what
//! a batch adds to an endpoint's counters (`job._delivery_tally`), both taken by
//! `job._record_deliveries`.  A field renamed, dropped or retyped on one side only is an
//! error here, the first time the row crosses, rather than a wrong value or a silent NULL
//! (pg_tests/endpoints.rs sends rows both ways through these functions).

use super::outcome::{DeliveryOutcome, EndpointTally};
use pgrx::datum::{DatumWithOid, TryFromDatumError, Uuid};
use pgrx::prelude::*;
use pgrx::spi::{self, SpiHeapTupleData};
use pgrx::JsonB;

/// A claimed delivery: a row of `job._delivery_claim`, field for field.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryClaim {
    pub endpoint: String,
    pub job_id: i64,
    pub token: Uuid,
    /// The request's body, JSON text.
    pub body: Option<String>,
    /// The delivery's path under the endpoint's URL.
    pub path: Option<String>,
    /// The delivery's own headers (a JSON object of strings).
    pub headers: Option<serde_json::Value>,
    /// The idempotency key the producer chose, if any (the webhook-id is made of it).
    pub webhook_id: Option<String>,
    pub url: String,
    pub method: Option<String>,
    /// The endpoint's headers (a JSON object of strings).
    pub endpoint_headers: Option<serde_json::Value>,
    /// The signing secrets: the current one, then the previous one while it still signs.
    pub secrets: Vec<String>,
    pub timeout_ms: Option<i64>,
    /// The endpoint's rate limit (requests per second), if it has one.
    pub rate_limit: Option<i32>,
}

impl DeliveryClaim {
    fn from_row(row: &SpiHeapTupleData) -> Result<DeliveryClaim, spi::Error> {
        Ok(DeliveryClaim {
            endpoint: row.get_by_name("endpoint")?.unwrap_or_default(),
            job_id: row.get_by_name("job_id")?.unwrap_or_default(),
            token: row
                .get_by_name("token")?
                .unwrap_or_else(|| Uuid::from_bytes([0; 16])),
            body: row.get_by_name("body")?,
            path: row.get_by_name("path")?,
            headers: row.get_by_name::<JsonB, _>("headers")?.map(|j| j.0),
            webhook_id: row.get_by_name("webhook_id")?,
            url: row.get_by_name("url")?.unwrap_or_default(),
            method: row.get_by_name("method")?,
            endpoint_headers: row
                .get_by_name::<JsonB, _>("endpoint_headers")?
                .map(|j| j.0),
            secrets: row.get_by_name("secrets")?.unwrap_or_default(),
            timeout_ms: row.get_by_name("timeout_ms")?,
            rate_limit: row.get_by_name("rate_limit")?,
        })
    }
}

/// Claims up to `room` deliveries for `worker` (`job._claim_deliveries`); `recent` is how
/// many requests each of `endpoints` started in the last second.
pub fn claim_deliveries(
    worker: &str,
    room: i32,
    endpoints: Vec<String>,
    recent: Vec<i32>,
) -> Result<Vec<DeliveryClaim>, spi::Error> {
    Spi::connect_mut(|client| {
        client
            .update(
                "SELECT * FROM job._claim_deliveries($1, $2, $3, $4)",
                None,
                &[worker.into(), room.into(), endpoints.into(), recent.into()],
            )?
            .map(|row| DeliveryClaim::from_row(&row))
            .collect()
    })
}

/// Records a batch of attempts (`job._record_deliveries`); an endpoint that failed
/// `disable_after` times in a row is disabled.
pub fn record_deliveries(
    outcomes: &[DeliveryOutcome],
    tallies: &[EndpointTally],
    disable_after: i32,
) -> Result<(), spi::Error> {
    let outcomes = outcomes
        .iter()
        .map(outcome_row)
        .collect::<Result<Vec<_>, _>>()?;
    let tallies = tallies
        .iter()
        .map(tally_row)
        .collect::<Result<Vec<_>, _>>()?;
    Spi::run_with_args(
        "SELECT job._record_deliveries($1, $2, $3)",
        &[
            composite_array(OUTCOME, outcomes),
            composite_array(TALLY, tallies),
            disable_after.into(),
        ],
    )
}

const OUTCOME: &str = "job._delivery_outcome";
const TALLY: &str = "job._delivery_tally";

type Row = PgHeapTuple<'static, AllocatedByRust>;

/// An empty row of the composite type `type_name`.
fn new_row(type_name: &str) -> Row {
    PgHeapTuple::new_composite_type(type_name).unwrap_or_else(|e| error!("{type_name}: {e}"))
}

// Every field is set by its name: one the type lacks, or of another type, is an error.
fn outcome_row(o: &DeliveryOutcome) -> Result<Row, TryFromDatumError> {
    let mut row = new_row(OUTCOME);
    row.set_by_name("job_id", o.job_id)?;
    row.set_by_name("token", o.token)?;
    row.set_by_name("result", o.result.clone().map(JsonB))?;
    row.set_by_name("error", o.error.as_deref())?;
    row.set_by_name("permanent", o.permanent)?;
    row.set_by_name("http_status", o.http_status)?;
    row.set_by_name("retry_after_ms", o.retry_after_ms)?;
    row.set_by_name("detail", o.detail.clone().map(JsonB))?;
    Ok(row)
}

fn tally_row(t: &EndpointTally) -> Result<Row, TryFromDatumError> {
    let mut row = new_row(TALLY);
    row.set_by_name("endpoint", t.endpoint.as_str())?;
    row.set_by_name("status_2xx", t.status_2xx)?;
    row.set_by_name("status_3xx", t.status_3xx)?;
    row.set_by_name("status_4xx", t.status_4xx)?;
    row.set_by_name("status_5xx", t.status_5xx)?;
    row.set_by_name("transport_errors", t.transport_errors)?;
    row.set_by_name("transient_failures", t.transient_failures)?;
    row.set_by_name("permanent_failures", t.permanent_failures)?;
    row.set_by_name("latency", t.latency.clone())?;
    row.set_by_name("latency_sum", t.latency_sum)?;
    row.set_by_name("succeeded", t.succeeded)?;
    row.set_by_name("failures_since_success", t.failures_since_success)?;
    row.set_by_name("last_status", t.last_status)?;
    row.set_by_name("last_error", t.last_error.as_deref())?;
    row.set_by_name("gone", t.gone)?;
    Ok(row)
}

/// `rows`, of the composite type `type_name`, as an array argument.  (pgrx makes an array of
/// tuples a `record[]`, which no function taking a named composite type accepts: the array
/// is built with the type's own oid here.)
fn composite_array(type_name: &str, rows: Vec<Row>) -> DatumWithOid<'static> {
    let element = match rows.first() {
        Some(row) => row.composite_type_oid(),
        None => new_row(type_name).composite_type_oid(),
    }
    .expect("a row of a composite type");
    // SAFETY: an array built from datums of type `element`, in the current memory context,
    // handed to SPI with the array type's oid.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let mut state = pg_sys::initArrayResult(element, context, false);
        for row in rows {
            let datum = row.into_composite_datum();
            state = pg_sys::accumArrayResult(
                state,
                datum.unwrap_or(pg_sys::Datum::from(0)),
                datum.is_none(),
                element,
                context,
            );
        }
        let array = pg_sys::makeArrayResult(state, context);
        DatumWithOid::new(array, pg_sys::get_array_type(element))
    }
}
