//! `performchat serve`: first-start bootstrap, then the HTTP server until SIGTERM/Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Output;
use super::admin::create_key;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{Db, redact_url};
use crate::error::Error;
use crate::service::AppState;

const BOOT_COMPANY: &str = "company_default";
const BOOT_AGENT: &str = "agent_default";

pub async fn run(database_url: &str, settings: Settings, out: Output) -> anyhow::Result<()> {
    let db = Db::connect(database_url).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let clock = Clock::default();
    bootstrap(&db, &clock, addr, out).await?;

    let stop = CancellationToken::new();
    let grace = Duration::from_secs(settings.shutdown_timeout.into());
    let (state, audit_writer) = AppState::start(db.clone(), settings, clock, stop.clone()).await?;
    tracing::info!(database = %redact_url(database_url), "performchat listening on http://{addr}");

    // SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish (at most `grace`),
    // then write the queued audit events and close the database.
    let signalled = CancellationToken::new();
    let on_signal = signalled.clone();
    let server = crate::http::serve(listener, state, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        on_signal.cancel();
    });
    tokio::select! {
        result = server => result?,
        _ = async { signalled.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("in-flight requests did not finish within {grace:?}; closing anyway");
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), audit_writer.close())
        .await
        .is_err()
    {
        tracing::warn!("the audit trail could not be flushed in time");
    }
    stop.cancel();
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// On an empty database, creates a company, its default agent and one API key, and prints
/// the key pair with a request to paste, once. Instances starting together on one empty
/// database race on the fixed company id; exactly one wins and prints.
async fn bootstrap(
    db: &Db,
    clock: &Clock,
    addr: std::net::SocketAddr,
    out: Output,
) -> anyhow::Result<()> {
    if db.count_companies().await? > 0 {
        return Ok(());
    }
    let now = clock.now_ms();
    match db
        .insert_company(BOOT_COMPANY, "Default company", now)
        .await
    {
        Ok(_) => {}
        Err(Error::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let agent = db
        .insert_agent(BOOT_AGENT, BOOT_COMPANY, "Support Agent", true, true, now)
        .await?;
    let (key, secret) = create_key(db, BOOT_COMPANY, &Default::default(), now).await?;
    let base = if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    let body = json!({
        "keyId": key.id,
        "keySecret": secret.expose(),
        "userId": "user_123",
        "agentId": agent.id,
        "expiresIn": "1h",
    });
    let curl = format!(
        "curl -X POST {base}/rest/v1/auth/token \\\n  -H \"Content-Type: application/json\" \\\n  -d '{body}'"
    );
    out.print(
        &json!({
            "bootstrap": {
                "companyId": BOOT_COMPANY,
                "agentId": agent.id,
                "keyId": key.id,
                "keySecret": secret.expose(),
                "curl": curl,
            }
        }),
        || {
            format!(
                "\nFirst start on an empty database. Created:\n  \
                 company    {BOOT_COMPANY} (Default company)\n  \
                 agent      {} (Support Agent, the company's default)\n  \
                 keyId      {}\n  \
                 keySecret  {}\n\n\
                 The secret is shown only this once: put both in your backend's environment\n\
                 (PERFORMCHAT_KEY_ID, PERFORMCHAT_KEY_SECRET). Mint a first token:\n\n{curl}\n",
                agent.id,
                key.id,
                secret.expose()
            )
        },
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
