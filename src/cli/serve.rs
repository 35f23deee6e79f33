//! `performchat serve`: first-start bootstrap, then the HTTP server until SIGTERM/Ctrl-C.

use anyhow::Context as _;
use serde_json::json;

use super::Output;
use super::admin::create_key;
use crate::app::App;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::StoreError;
use crate::db::{Db, redact_url};

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

    let app = App::build(db, settings, clock).await?;
    tracing::info!(database = %redact_url(database_url), "performchat listening on http://{addr}");
    // SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish, then write the
    // queued audit events and close the database.
    app.run_until_stopped(listener, shutdown_signal()).await?;
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
        Err(StoreError::Conflict(..)) => return Ok(()),
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
