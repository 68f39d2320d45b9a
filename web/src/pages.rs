//! The pages and actions.  Every statement takes its values as bind parameters; every
//! parameter is checked before it reaches one, and a malformed one is a 400 page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio_postgres::Row;

use crate::db::Privileges;
use crate::error::AppError;
use crate::security::{self, Guard};

pub struct AppState {
    pub pool: Pool,
    pub guard: Guard,
}

type Shared = State<Arc<AppState>>;
type Page = Result<Response, AppError>;

/// Rows a list shows at most; the next page starts below the last id shown (keyset).
const PAGE_SIZE: i64 = 50;
/// Search text and filters longer than this are not names anyone typed.
const MAX_TEXT: usize = 200;
const JOB_STATES: [&str; 6] = [
    "waiting",
    "scheduled",
    "running",
    "completed",
    "dead",
    "cancelled",
];

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/style.css", get(style))
        .route("/queues/{name}", get(queue))
        .route("/queues/{name}/{action}", post(queue_action))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/{action}", post(job_action))
        .route("/dead", get(dead))
        .route("/dead/retry", post(dead_retry))
        .route("/schedules", get(schedules))
        .route("/schedules/{name}/{action}", post(schedule_action))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{name}/{action}", post(endpoint_action))
        .route("/audit", get(audit))
        .fallback(|| async { AppError::NotFound("There is no such page.".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::layer,
        ))
        .with_state(state)
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/style.css"),
    )
        .into_response()
}

/// Helpers every template calls as `self.…`.
trait Helpers {
    /// `s` as one path segment or query value.
    fn enc(&self, s: &str) -> String {
        utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
    }
    fn opt<'a>(&self, s: &'a Option<String>) -> &'a str {
        s.as_deref().unwrap_or("—")
    }
    fn secs(&self, s: &Option<f64>) -> String {
        match s {
            None => "—".into(),
            Some(v) if *v < 1.0 => format!("{:.0} ms", v * 1000.0),
            Some(v) => format!("{v:.2} s"),
        }
    }
}
impl<T> Helpers for T {}

fn render(t: impl Template) -> Page {
    let html = t
        .render()
        .map_err(|e| AppError::Internal(format!("a page failed to render: {e}")))?;
    Ok(Html(html).into_response())
}

// ---------------------------------------------------------------------------------------
// Parameters

struct Params(HashMap<String, String>);

impl Params {
    fn from(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Params, AppError> {
        let Query(pairs) =
            query.map_err(|_| AppError::BadRequest("The query string is malformed.".into()))?;
        Ok(Params(pairs.into_iter().collect()))
    }

    /// A text filter: absent or empty is none.
    fn text(&self, name: &str) -> Result<Option<String>, AppError> {
        // Checked before trimming: a control character is a mistake even at the ends.
        match self
            .0
            .get(name)
            .map(|v| check_text(name, v))
            .transpose()?
            .map(str::trim)
        {
            None | Some("") => Ok(None),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    fn id(&self, name: &str) -> Result<Option<i64>, AppError> {
        match self.0.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => parse_id(name, v).map(Some),
        }
    }

    fn state(&self) -> Result<Option<String>, AppError> {
        match self.text("state")? {
            None => Ok(None),
            Some(s) if JOB_STATES.contains(&s.as_str()) => Ok(Some(s)),
            Some(_) => Err(AppError::BadRequest(format!(
                "state must be one of {}.",
                JOB_STATES.join(", ")
            ))),
        }
    }

    /// `refresh=N`: the page reloads itself every N seconds (a meta refresh, no script).
    fn refresh(&self) -> Result<Option<u32>, AppError> {
        match self.0.get("refresh").map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (2..=3600).contains(&n) => Ok(Some(n)),
                _ => Err(AppError::BadRequest(
                    "refresh must be a number of seconds from 2 to 3600.".into(),
                )),
            },
        }
    }
}

fn check_text<'a>(name: &str, v: &'a str) -> Result<&'a str, AppError> {
    if v.chars().count() > MAX_TEXT {
        Err(AppError::BadRequest(format!(
            "{name} is longer than {MAX_TEXT} characters."
        )))
    } else if v.chars().any(char::is_control) {
        Err(AppError::BadRequest(format!(
            "{name} contains control characters."
        )))
    } else {
        Ok(v)
    }
}

fn parse_id(name: &str, v: &str) -> Result<i64, AppError> {
    match v.parse::<i64>() {
        Ok(id) if id > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(AppError::BadRequest(format!(
            "{name} must be a job id: a positive whole number."
        ))),
    }
}

fn path_name(path: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    let Path(name) = path.map_err(|_| AppError::BadRequest("The address is malformed.".into()))?;
    check_text("the name", &name)?;
    Ok(name)
}

fn path_pair(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), AppError> {
    let Path((name, action)) =
        path.map_err(|_| AppError::BadRequest("The address is malformed.".into()))?;
    check_text("the name", &name)?;
    Ok((name, action))
}

/// The form of an action must carry this process's form token.
fn check_form(
    state: &AppState,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<(), AppError> {
    let Form(fields) = form.map_err(|_| AppError::BadRequest("The form is malformed.".into()))?;
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if state.guard.csrf_matches(token) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "The form's token is missing or stale: reload the page and try again.".into(),
        ))
    }
}

/// The URL of an endpoint without what may be a credential: user info, query and fragment.
fn redact_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Overview

struct QueueRow {
    queue: String,
    paused: bool,
    waiting: i64,
    scheduled: i64,
    running: i64,
    completed: i64,
    dead: i64,
    cancelled: i64,
    oldest_waiting_age: Option<String>,
}

impl QueueRow {
    fn from(r: &Row) -> QueueRow {
        QueueRow {
            queue: r.get(0),
            paused: r.get(1),
            waiting: r.get(2),
            scheduled: r.get(3),
            running: r.get(4),
            completed: r.get(5),
            dead: r.get(6),
            cancelled: r.get(7),
            oldest_waiting_age: r.get(8),
        }
    }
}

const QUEUE_STATS: &str = "SELECT queue, paused, waiting::int8, scheduled::int8, running::int8,
        completed::int8, dead::int8, cancelled::int8,
        justify_interval(date_trunc('second', oldest_waiting_age))::text
   FROM job.queue_stats";

struct MetricRow {
    queue: String,
    job_type: Option<String>,
    completed_1h: i64,
    failed_1h: i64,
    dead_1h: i64,
    failure_rate_5m: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

struct ProcessRow {
    pid: i32,
    kind: String,
}

struct WorkerRow {
    worker: String,
    last_seen: String,
    jobs_held: i64,
    jobs_stalled: i64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    refresh: Option<u32>,
    csrf: String,
    queues: Vec<QueueRow>,
    metrics: Vec<MetricRow>,
    chart: String,
    processes: Vec<ProcessRow>,
    workers: Vec<WorkerRow>,
}

async fn overview(
    State(state): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let params = Params::from(query)?;
    let refresh = params.refresh()?;
    let client = state.pool.get().await?;
    let queues: Vec<QueueRow> = client
        .query(&format!("{QUEUE_STATS} ORDER BY queue"), &[])
        .await?
        .iter()
        .map(QueueRow::from)
        .collect();
    let metrics: Vec<MetricRow> = client
        .query(
            "SELECT queue, job_type, coalesce(completed_1h, 0)::int8, coalesce(failed_1h, 0)::int8,
                    coalesce(dead_1h, 0)::int8, failure_rate_5m::float8, processing_p50::float8,
                    processing_p95::float8, processing_p99::float8
               FROM job.metrics ORDER BY queue, job_type NULLS FIRST",
            &[],
        )
        .await?
        .iter()
        .map(|r| MetricRow {
            queue: r.get(0),
            job_type: r.get(1),
            completed_1h: r.get(2),
            failed_1h: r.get(3),
            dead_1h: r.get(4),
            failure_rate_5m: r.get(5),
            p50: r.get(6),
            p95: r.get(7),
            p99: r.get(8),
        })
        .collect();
    let processes = client
        .query(
            "SELECT pid, kind FROM job.worker_processes() ORDER BY kind, pid",
            &[],
        )
        .await?
        .iter()
        .map(|r| ProcessRow {
            pid: r.get(0),
            kind: r.get(1),
        })
        .collect();
    let workers = client
        .query(
            "SELECT worker, date_trunc('second', last_seen)::text, jobs_held::int8, jobs_stalled::int8
               FROM job.workers WHERE last_seen > now() - interval '1 hour'
              ORDER BY last_seen DESC LIMIT 50",
            &[],
        )
        .await?
        .iter()
        .map(|r| WorkerRow {
            worker: r.get(0),
            last_seen: r.get(1),
            jobs_held: r.get(2),
            jobs_stalled: r.get(3),
        })
        .collect();
    let chart = hour_chart(&metrics);
    render(OverviewPage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        queues,
        metrics,
        chart,
        processes,
        workers,
    })
}

/// Completed, failed and dead attempts of the last hour per queue, as horizontal bars in SVG
/// (drawn here: no script).  Every text in it is escaped.
fn hour_chart(metrics: &[MetricRow]) -> String {
    let mut per_queue: Vec<(&str, [i64; 3])> = Vec::new();
    for m in metrics {
        match per_queue.last_mut() {
            Some((q, sums)) if *q == m.queue => {
                sums[0] += m.completed_1h;
                sums[1] += m.failed_1h;
                sums[2] += m.dead_1h;
            }
            _ => per_queue.push((&m.queue, [m.completed_1h, m.failed_1h, m.dead_1h])),
        }
    }
    if per_queue.is_empty() {
        return String::new();
    }
    let max = per_queue
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let (label_w, bar_w, row_h, bar_h) = (160.0, 420.0, 44.0, 12.0);
    let height = per_queue.len() as f64 * row_h + 24.0;
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"attempts in the last hour per queue\">",
        w = label_w + bar_w + 80.0
    );
    let classes = ["completed", "failed", "dead"];
    for (i, (queue, sums)) in per_queue.iter().enumerate() {
        let y = i as f64 * row_h;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\" class=\"label\">{}</text>",
            y + 24.0,
            html_escape(&shorten(queue, 22))
        );
        for (k, value) in sums.iter().enumerate() {
            let by = y + 4.0 + k as f64 * bar_h;
            let w = (*value as f64 / max as f64 * bar_w).max(if *value > 0 { 1.0 } else { 0.0 });
            let _ = write!(
                svg,
                "<rect x=\"{label_w}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{:.1}\" class=\"{}\"><title>{} {}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{value}</text>",
                bar_h - 2.0,
                classes[k],
                value,
                classes[k],
                label_w + w + 4.0,
                by + bar_h - 3.0,
            );
        }
    }
    let ly = height - 6.0;
    for (k, class) in classes.iter().enumerate() {
        let x = label_w + k as f64 * 110.0;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"10\" height=\"10\" class=\"{class}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\" class=\"value\">{class}</text>",
            ly - 9.0,
            x + 14.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max - 1).chain(['…']).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Queue

struct JobRow {
    id: i64,
    job_type: Option<String>,
    state: String,
    attempt: i64,
    run_at: String,
    last_error: Option<String>,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    refresh: Option<u32>,
    csrf: String,
    can: Privileges,
    q: QueueRow,
    jobs: Vec<JobRow>,
    states: [&'static str; 6],
    state: Option<String>,
    job_type: Option<String>,
    search: Option<String>,
    /// The link to the next page, when there is one.
    next: Option<String>,
}

async fn queue(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let name = path_name(path)?;
    let params = Params::from(query)?;
    let refresh = params.refresh()?;
    let job_state = params.state()?;
    let job_type = params.text("type")?;
    let search = params.text("q")?;
    let before = params.id("before")?;
    // A search is an id when it reads as one, and an idempotency key either way.
    let search_id = search.as_deref().and_then(|s| parse_id("q", s).ok());
    let client = state.pool.get().await?;
    let can = Privileges::of(&client).await?;
    let Some(row) = client
        .query_opt(&format!("{QUEUE_STATS} WHERE queue = $1"), &[&name])
        .await?
    else {
        return Err(AppError::NotFound(format!(
            "There is no queue named {name:?}."
        )));
    };
    let rows = client
        .query(
            "SELECT id, job_type, state, attempt::int8, date_trunc('second', run_at)::text,
                    left(errors -> -1 ->> 'error', 200)
               FROM job.jobs
              WHERE queue = $1
                AND ($2::text IS NULL OR state = $2)
                AND ($3::text IS NULL OR job_type = $3)
                AND ($4::text IS NULL OR id = $5 OR idempotency_key = $4)
                AND ($6::int8 IS NULL OR id < $6)
              ORDER BY id DESC
              LIMIT $7",
            &[
                &name,
                &job_state,
                &job_type,
                &search,
                &search_id,
                &before,
                &(PAGE_SIZE + 1),
            ],
        )
        .await?;
    let mut jobs: Vec<JobRow> = rows
        .iter()
        .map(|r| JobRow {
            id: r.get(0),
            job_type: r.get(1),
            state: r.get(2),
            attempt: r.get(3),
            run_at: r.get(4),
            last_error: r.get(5),
        })
        .collect();
    let next = if jobs.len() as i64 > PAGE_SIZE {
        jobs.truncate(PAGE_SIZE as usize);
        let last = jobs.last().map_or(0, |j| j.id);
        let mut link = format!("/queues/{}?before={last}", name.enc_self());
        for (k, v) in [("state", &job_state), ("type", &job_type), ("q", &search)] {
            if let Some(v) = v {
                let _ = write!(link, "&{k}={}", v.enc_self());
            }
        }
        Some(link)
    } else {
        None
    };
    render(QueuePage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        can,
        q: QueueRow::from(&row),
        jobs,
        states: JOB_STATES,
        state: job_state,
        job_type,
        search,
        next,
    })
}

trait EncSelf {
    fn enc_self(&self) -> String;
}
impl EncSelf for str {
    fn enc_self(&self) -> String {
        utf8_percent_encode(self, NON_ALPHANUMERIC).to_string()
    }
}

async fn queue_action(
    State(state): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Page {
    let (name, action) = path_pair(path)?;
    let sql = match action.as_str() {
        "pause" => "SELECT job.pause_queue($1)",
        "resume" => "SELECT job.resume_queue($1)",
        "retry-dead" => "SELECT job.retry_dead($1)",
        _ => return Err(AppError::NotFound("There is no such action.".into())),
    };
    check_form(&state, form)?;
    let client = state.pool.get().await?;
    client.execute(sql, &[&name]).await?;
    Ok(Redirect::to(&format!("/queues/{}", name.enc_self())).into_response())
}

// ---------------------------------------------------------------------------------------
// Job

struct JobDetail {
    id: i64,
    queue: String,
    job_type: Option<String>,
    state: String,
    payload: String,
    priority: i64,
    attempt: i64,
    max_retries: i64,
    run_at: Option<String>,
    enqueued_at: Option<String>,
    claimed_at: Option<String>,
    claimed_by: Option<String>,
    lease_expires_at: Option<String>,
    finished_at: Option<String>,
    result: Option<String>,
    keys: Vec<(&'static str, String)>,
}

struct AttemptError {
    n: i64,
    at: Option<String>,
    error: Option<String>,
    worker: Option<String>,
    http_status: Option<String>,
    latency_ms: Option<String>,
    permanent: Option<String>,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    refresh: Option<u32>,
    csrf: String,
    can: Privileges,
    j: JobDetail,
    errors: Vec<AttemptError>,
}

impl JobPage {
    fn retryable(&self) -> bool {
        self.j.state == "dead" || self.j.state == "cancelled"
    }
    fn cancellable(&self) -> bool {
        matches!(self.j.state.as_str(), "waiting" | "scheduled" | "running")
    }
}

async fn job(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let Path(id) = path.map_err(|_| AppError::BadRequest("The address is malformed.".into()))?;
    let id = parse_id("the job id", &id)?;
    let refresh = Params::from(query)?.refresh()?;
    let client = state.pool.get().await?;
    let can = Privileges::of(&client).await?;
    let Some(r) = client
        .query_opt(
            "SELECT id, queue, job_type, state, jsonb_pretty(payload), priority::int8, attempt::int8,
                    max_retries::int8, date_trunc('milliseconds', run_at)::text,
                    date_trunc('milliseconds', enqueued_at)::text,
                    date_trunc('milliseconds', claimed_at)::text, claimed_by,
                    date_trunc('milliseconds', lease_expires_at)::text,
                    date_trunc('milliseconds', finished_at)::text, jsonb_pretty(result),
                    idempotency_key, concurrency_key, order_key, singleton_key, debounce_key
               FROM job.jobs WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Err(AppError::NotFound(format!("There is no job {id}.")));
    };
    let mut keys = Vec::new();
    for (i, label) in [
        (15, "idempotency key"),
        (16, "concurrency key"),
        (17, "order key"),
        (18, "singleton key"),
        (19, "debounce key"),
    ] {
        if let Some(v) = r.get::<_, Option<String>>(i) {
            keys.push((label, v));
        }
    }
    let j = JobDetail {
        id: r.get(0),
        queue: r.get(1),
        job_type: r.get(2),
        state: r.get(3),
        payload: r.get(4),
        priority: r.get(5),
        attempt: r.get(6),
        max_retries: r.get(7),
        run_at: r.get(8),
        enqueued_at: r.get(9),
        claimed_at: r.get(10),
        claimed_by: r.get(11),
        lease_expires_at: r.get(12),
        finished_at: r.get(13),
        result: r.get(14),
        keys,
    };
    let errors = client
        .query(
            "SELECT n, e ->> 'at', e ->> 'error', e ->> 'worker', e ->> 'http_status',
                    e ->> 'latency_ms', e ->> 'permanent'
               FROM job.jobs,
                    jsonb_array_elements(CASE WHEN jsonb_typeof(errors) = 'array' THEN errors
                                              ELSE '[]' END) WITH ORDINALITY AS a(e, n)
              WHERE id = $1
              ORDER BY n",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| AttemptError {
            n: r.get(0),
            at: r.get(1),
            error: r.get(2),
            worker: r.get(3),
            http_status: r.get(4),
            latency_ms: r.get(5),
            permanent: r.get(6),
        })
        .collect();
    render(JobPage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        can,
        j,
        errors,
    })
}

async fn job_action(
    State(state): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Page {
    let Path((id, action)) =
        path.map_err(|_| AppError::BadRequest("The address is malformed.".into()))?;
    let id = parse_id("the job id", &id)?;
    let sql = match action.as_str() {
        "retry" => "SELECT job.retry($1)",
        "cancel" => "SELECT job.cancel($1)",
        _ => return Err(AppError::NotFound("There is no such action.".into())),
    };
    check_form(&state, form)?;
    let client = state.pool.get().await?;
    client.execute(sql, &[&id]).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")).into_response())
}

// ---------------------------------------------------------------------------------------
// Dead letters

struct DeadGroup {
    queue: String,
    error: Option<String>,
    jobs: i64,
    newest_id: i64,
    last_at: Option<String>,
}

#[derive(Template)]
#[template(path = "dead.html")]
struct DeadPage {
    refresh: Option<u32>,
    csrf: String,
    can: Privileges,
    groups: Vec<DeadGroup>,
}

async fn dead(
    State(state): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let refresh = Params::from(query)?.refresh()?;
    let client = state.pool.get().await?;
    let can = Privileges::of(&client).await?;
    let groups = client
        .query(
            "SELECT queue, left(errors -> -1 ->> 'error', 300) AS error, count(*)::int8, max(id),
                    date_trunc('second', max(finished_at))::text
               FROM job.jobs WHERE state = 'dead'
              GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 200",
            &[],
        )
        .await?
        .iter()
        .map(|r| DeadGroup {
            queue: r.get(0),
            error: r.get(1),
            jobs: r.get(2),
            newest_id: r.get(3),
            last_at: r.get(4),
        })
        .collect();
    render(DeadPage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        can,
        groups,
    })
}

/// Dead jobs a group's retry revives at most per request (each is one job.retry call, audited).
const GROUP_RETRY_MAX: i64 = 1000;

/// Retries the dead jobs of one group of the dead-letter page: a queue and a last error (as
/// the page shows it: its first 300 characters; absent for jobs without one).
async fn dead_retry(
    State(state): Shared,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Page {
    let fields: HashMap<String, String> = match &form {
        Ok(Form(f)) => f.iter().cloned().collect(),
        Err(_) => HashMap::new(),
    };
    check_form(&state, form)?;
    let queue = match fields.get("queue") {
        Some(q) if !q.is_empty() => check_text("queue", q)?.to_owned(),
        _ => return Err(AppError::BadRequest("queue is required.".into())),
    };
    // The error is shown, and sent back, as stored: control characters (newlines) included.
    let error = match fields.get("error") {
        None => None,
        Some(e) if e.chars().count() > 300 => {
            return Err(AppError::BadRequest(
                "error is longer than 300 characters.".into(),
            ))
        }
        Some(e) => Some(e.clone()),
    };
    let client = state.pool.get().await?;
    client
        .execute(
            "SELECT count(*) FILTER (WHERE job.retry(d.id))
               FROM (SELECT id FROM job.jobs
                      WHERE state = 'dead' AND queue = $1
                        AND left(errors -> -1 ->> 'error', 300) IS NOT DISTINCT FROM $2
                      ORDER BY id LIMIT $3) d",
            &[&queue, &error, &GROUP_RETRY_MAX],
        )
        .await?;
    Ok(Redirect::to("/dead").into_response())
}

// ---------------------------------------------------------------------------------------
// Schedules

struct ScheduleRow {
    name: String,
    cron: String,
    timezone: String,
    queue: String,
    paused: bool,
    next_fires: Vec<String>,
    last_run: Option<String>,
    last_job_id: Option<i64>,
    last_job_state: Option<String>,
    last_error: Option<String>,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    refresh: Option<u32>,
    csrf: String,
    can: Privileges,
    schedules: Vec<ScheduleRow>,
}

async fn schedules(
    State(state): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let refresh = Params::from(query)?.refresh()?;
    let client = state.pool.get().await?;
    let can = Privileges::of(&client).await?;
    // The next three fires: the view's next_run, then job.cron_next (granted to PUBLIC) twice.
    let schedules = client
        .query(
            "SELECT s.name, s.cron, s.timezone, s.queue, s.paused,
                    ARRAY[date_trunc('second', s.next_run_local)::text,
                          date_trunc('second', n2 AT TIME ZONE s.timezone)::text,
                          date_trunc('second', CASE WHEN n2 IS NOT NULL THEN job.cron_next(s.cron, s.timezone, n2) END
                                     AT TIME ZONE s.timezone)::text],
                    date_trunc('second', s.last_run)::text, s.last_job_id::int8, s.last_job_state, s.last_error
               FROM job.schedules s
               LEFT JOIN LATERAL (SELECT CASE WHEN s.next_run IS NOT NULL
                                          THEN job.cron_next(s.cron, s.timezone, s.next_run) END AS n2) n ON true
              ORDER BY s.name",
            &[],
        )
        .await?
        .iter()
        .map(|r| ScheduleRow {
            name: r.get(0),
            cron: r.get(1),
            timezone: r.get(2),
            queue: r.get(3),
            paused: r.get(4),
            next_fires: r
                .get::<_, Vec<Option<String>>>(5)
                .into_iter()
                .flatten()
                .collect(),
            last_run: r.get(6),
            last_job_id: r.get(7),
            last_job_state: r.get(8),
            last_error: r.get(9),
        })
        .collect();
    render(SchedulesPage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        can,
        schedules,
    })
}

async fn schedule_action(
    State(state): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Page {
    let (name, action) = path_pair(path)?;
    let sql = match action.as_str() {
        "pause" => "SELECT job.pause_schedule($1)",
        "resume" => "SELECT job.resume_schedule($1)",
        _ => return Err(AppError::NotFound("There is no such action.".into())),
    };
    check_form(&state, form)?;
    let client = state.pool.get().await?;
    client.execute(sql, &[&name]).await?;
    Ok(Redirect::to("/schedules").into_response())
}

// ---------------------------------------------------------------------------------------
// Endpoints

struct EndpointRow {
    name: String,
    url: String,
    method: String,
    queue: String,
    header_names: Vec<String>,
    state: String,
    disabled_reason: Option<String>,
    in_flight: i64,
    consecutive_failures: Option<i64>,
    last_status: Option<i64>,
    last_attempt_at: Option<String>,
    success_rate: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(Template)]
#[template(path = "endpoints.html")]
struct EndpointsPage {
    refresh: Option<u32>,
    csrf: String,
    can: Privileges,
    endpoints: Vec<EndpointRow>,
}

async fn endpoints(
    State(state): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let refresh = Params::from(query)?.refresh()?;
    let client = state.pool.get().await?;
    let can = Privileges::of(&client).await?;
    // Only names and figures: never a secret or a header value (the views hold none).
    let endpoints = client
        .query(
            "SELECT e.name, e.url, e.method, e.queue, e.header_names, e.state, e.disabled_reason,
                    e.in_flight::int8, e.consecutive_failures::int8, e.last_status::int8,
                    date_trunc('second', e.last_attempt_at)::text,
                    m.status_2xx::float8 / nullif(m.status_2xx + m.status_3xx + m.status_4xx
                        + m.status_5xx + m.transport_errors, 0),
                    m.latency_p50::float8, m.latency_p95::float8, m.latency_p99::float8
               FROM job.endpoints e
               LEFT JOIN job.endpoint_metrics m ON m.endpoint = e.name
              ORDER BY e.name",
            &[],
        )
        .await?
        .iter()
        .map(|r| EndpointRow {
            name: r.get(0),
            url: redact_url(r.get(1)),
            method: r.get(2),
            queue: r.get(3),
            header_names: r.get(4),
            state: r.get(5),
            disabled_reason: r.get(6),
            in_flight: r.get(7),
            consecutive_failures: r.get(8),
            last_status: r.get(9),
            last_attempt_at: r.get(10),
            success_rate: r.get(11),
            p50: r.get(12),
            p95: r.get(13),
            p99: r.get(14),
        })
        .collect();
    render(EndpointsPage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        can,
        endpoints,
    })
}

async fn endpoint_action(
    State(state): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Page {
    let (name, action) = path_pair(path)?;
    let sql = match action.as_str() {
        "pause" => "SELECT job.pause_endpoint($1)",
        "resume" => "SELECT job.resume_endpoint($1)",
        _ => return Err(AppError::NotFound("There is no such action.".into())),
    };
    check_form(&state, form)?;
    let client = state.pool.get().await?;
    client.execute(sql, &[&name]).await?;
    Ok(Redirect::to("/endpoints").into_response())
}

// ---------------------------------------------------------------------------------------
// Audit log

struct AuditRow {
    id: i64,
    at: String,
    role: Option<String>,
    session_role: Option<String>,
    action: String,
    /// An endpoint's URL (create_endpoint, alter_endpoint), shown as the endpoints page shows
    /// it: a query string may hold a credential.
    url: Option<String>,
    arguments: Option<String>,
    jobs_touched: Option<i64>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    refresh: Option<u32>,
    csrf: String,
    action: Option<String>,
    rows: Vec<AuditRow>,
    next: Option<String>,
}

async fn audit(
    State(state): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let params = Params::from(query)?;
    let refresh = params.refresh()?;
    let action = params.text("action")?;
    let before = params.id("before")?;
    let client = state.pool.get().await?;
    let mut rows: Vec<AuditRow> = client
        .query(
            "SELECT id, date_trunc('second', at)::text, role::text, session_role::text, action,
                    (arguments - 'url')::text, arguments ->> 'url', jobs_touched::int8
               FROM job.audit_log
              WHERE ($1::text IS NULL OR action = $1) AND ($2::int8 IS NULL OR id < $2)
              ORDER BY id DESC LIMIT $3",
            &[&action, &before, &(PAGE_SIZE + 1)],
        )
        .await?
        .iter()
        .map(|r| AuditRow {
            id: r.get(0),
            at: r.get(1),
            role: r.get(2),
            session_role: r.get(3),
            action: r.get(4),
            arguments: r.get(5),
            url: r.get::<_, Option<&str>>(6).map(redact_url),
            jobs_touched: r.get(7),
        })
        .collect();
    let next = if rows.len() as i64 > PAGE_SIZE {
        rows.truncate(PAGE_SIZE as usize);
        let last = rows.last().map_or(0, |r| r.id);
        Some(match &action {
            Some(a) => format!("/audit?before={last}&action={}", a.enc_self()),
            None => format!("/audit?before={last}"),
        })
    } else {
        None
    };
    render(AuditPage {
        refresh,
        csrf: state.guard.csrf_token().to_owned(),
        action,
        rows,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_decimal_numbers() {
        assert_eq!(parse_id("id", "42").unwrap(), 42);
        for bad in [
            "0",
            "-1",
            "+1",
            "1e3",
            "abc",
            "",
            "99999999999999999999",
            " 1",
            "1;",
        ] {
            assert!(parse_id("id", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn text_filters_are_bounded_and_printable() {
        assert!(check_text("q", "emails").is_ok());
        assert!(check_text("q", &"x".repeat(MAX_TEXT)).is_ok());
        assert!(check_text("q", &"x".repeat(MAX_TEXT + 1)).is_err());
        assert!(check_text("q", "a\0b").is_err());
        assert!(check_text("q", "a\nb").is_err());
    }

    #[test]
    fn endpoint_urls_lose_credentials() {
        assert_eq!(
            redact_url("https://user:pw@example.com/hook?token=abc#x"),
            "https://example.com/hook"
        );
        assert_eq!(redact_url("http://h:80/p"), "http://h:80/p");
        assert_eq!(redact_url("http://h/p@q"), "http://h/p@q");
    }

    #[test]
    fn chart_escapes_queue_names() {
        let m = MetricRow {
            queue: "<script>".into(),
            job_type: None,
            completed_1h: 3,
            failed_1h: 1,
            dead_1h: 0,
            failure_rate_5m: None,
            p50: None,
            p95: None,
            p99: None,
        };
        let svg = hour_chart(&[m]);
        assert!(svg.contains("&lt;script&gt;"));
        assert!(!svg.contains("<script>"));
        assert!(hour_chart(&[]).is_empty());
    }
}
