//! pg_jobqueue-web: a dashboard for pg_jobqueue, a separate program that reads the extension's
//! public views and calls its functions as the role it connects with (README "Dashboard").

mod db;
mod error;
mod pages;
mod security;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about = "A web dashboard for pg_jobqueue")]
struct Args {
    /// The database to show, e.g. postgres://jobs_monitor@localhost/app.  The dashboard can do
    /// exactly what this role may: give it the README's monitor or admin recipe.
    #[arg(long, env = "PGJQ_WEB_DATABASE_URL")]
    database_url: String,
    /// Address and port to listen on.  Anything but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Required of every request: as `Authorization: Bearer TOKEN`, or as the password of HTTP
    /// basic auth (any user name), which browsers ask for.
    #[arg(long, env = "PGJQ_WEB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Connections to the database at most.
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(message) = run(args).await {
        eprintln!("pg_jobqueue-web: {message}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let token = args.token.filter(|t| !t.is_empty());
    security::check_listen(&args.listen, token.as_deref())?;
    let pool = db::pool(&args.database_url, args.pool_size)?;
    let state = Arc::new(pages::AppState {
        pool,
        guard: security::Guard::new(token),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // Tests and scripts wait for this line to know the port (--listen 127.0.0.1:0 picks one).
    println!("pg_jobqueue-web listening on http://{local}");
    axum::serve(listener, pages::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server failed: {e}"))
}
