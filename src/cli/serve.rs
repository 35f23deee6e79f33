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
    if settings.demo && !settings.demo_public && !settings.listen.ip().is_loopback() {
        anyhow::bail!(
            "--demo serves a page where anyone who reaches it chats as a demo user and answers \
             as the company's agents: it is for loopback ({} is not); add --demo-public to \
             serve it there anyway",
            settings.listen
        );
    }
    if settings.audit_mints != crate::config::AuditMints::Off
        && settings.audit_mint_retention.as_secs() < settings.max_expires_in.secs()
    {
        tracing::warn!(
            "--audit-mint-retention is shorter than --max-expires-in: tokens still usable may \
             outlive the record of their mint"
        );
    }
    let db = Db::connect(database_url).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let clock = Clock::default();
    bootstrap(&db, &clock, addr, out).await?;
    if settings.demo {
        demo_banner(&db, &settings.demo_company, addr, out).await?;
    }

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
    let base = base_url(addr);
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

/// `--demo`: the page's address, once its company is known to exist.
async fn demo_banner(
    db: &Db,
    company: &str,
    addr: std::net::SocketAddr,
    out: Output,
) -> anyhow::Result<()> {
    if db.find_company(company).await?.is_none() {
        anyhow::bail!(
            "--demo talks with the agents of company {company}, which does not exist: name \
             one with --demo-company (performchat company list)"
        );
    }
    let url = format!("{}/demo", base_url(addr));
    out.print(&json!({"demo": url, "demoCompany": company}), || {
        format!("\nDemo: open {url} (the widget and an agent's pane, company {company})\n")
    });
    Ok(())
}

/// The address to print for a listen address (loopback for one that listens everywhere).
fn base_url(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
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
