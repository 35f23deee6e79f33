//! The operator commands. `serve` runs the server; the rest change the database directly,
//! and running servers pick their changes up through the change log within a second.

mod admin;
mod serve;

use serde::Serialize;

use crate::config::{Cli, Command, LogFormat, Settings};
use crate::db::{Db, StoreError, redact_url};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    command(cli).await.map_err(|e| {
        // Say plainly what an operator can do about a storage fault.
        let unavailable = e.chain().any(|cause| {
            cause
                .downcast_ref::<StoreError>()
                .is_some_and(|s| matches!(s, StoreError::Unavailable(_)))
                || cause
                    .downcast_ref::<sqlx::Error>()
                    .is_some_and(crate::db::is_unavailable)
        });
        if unavailable {
            e.context(
                "the database is unreachable or refuses writes (a full disk, a read-only \
                 database): retry once that is fixed",
            )
        } else {
            e
        }
    })
}

async fn command(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    match cli.command {
        Command::Serve(settings) => serve::run(&cli.database_url, settings, out).await,
        Command::Migrate => {
            Db::connect(&cli.database_url).await?.close().await;
            out.print(&serde_json::json!({"migrated": true}), || {
                "migrations applied".to_owned()
            });
            Ok(())
        }
        Command::Config(settings) => {
            print_config(&cli.database_url, cli.log_format, &settings, out);
            Ok(())
        }
        Command::Audit {
            company,
            since,
            user,
            limit,
        } => {
            let db = Db::connect(&cli.database_url).await?;
            admin::audit_read(&db, &company, since, user.as_deref(), limit, out).await
        }
        Command::Company(c) => admin::company(&Db::connect(&cli.database_url).await?, c, out).await,
        Command::Agent(c) => admin::agent(&Db::connect(&cli.database_url).await?, c, out).await,
        Command::Key(c) => admin::key(&Db::connect(&cli.database_url).await?, c, out).await,
        Command::SigningKey(c) => {
            admin::signing_key(&Db::connect(&cli.database_url).await?, c, out).await
        }
        Command::User(c) => admin::user(&Db::connect(&cli.database_url).await?, c, out).await,
    }
}

/// Where command results go: stdout, as JSON with `--json`, else as text for people.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn print<T: Serialize>(self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serialisable")
            );
        } else {
            println!("{}", human());
        }
    }
}

/// The effective configuration, secrets hidden (the database URL's password).
fn print_config(database_url: &str, log_format: LogFormat, s: &Settings, out: Output) {
    let value = serde_json::json!({
        "database-url": redact_url(database_url),
        "log-format": log_format,
        "listen": s.listen.to_string(),
        "max-expires-in": format!("{}s", s.max_expires_in.secs()),
        "token-leeway": s.token_leeway,
        "issuer": s.issuer,
        "change-poll-ms": s.change_poll_ms,
        "max-staleness": s.max_staleness,
        "audit-retention": format!("{}s", s.audit_retention.as_secs()),
        "shutdown-timeout": s.shutdown_timeout,
    });
    out.print(&value, || {
        value
            .as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    });
}
