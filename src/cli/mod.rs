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

/// The effective configuration: every setting of the server and the global options it
/// reads, keyed by flag name, each value in a form its flag takes back, with the database
/// URL's password hidden.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct EffectiveConfig<'a> {
    #[serde(serialize_with = "redacted_url")]
    database_url: &'a str,
    log_format: LogFormat,
    #[serde(flatten)]
    settings: &'a Settings,
}

fn redacted_url<S: serde::Serializer>(url: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// Prints the effective configuration: `name = value` lines, or one JSON object.
fn print_config(database_url: &str, log_format: LogFormat, settings: &Settings, out: Output) {
    let value = serde_json::to_value(EffectiveConfig {
        database_url,
        log_format,
        settings,
    })
    .expect("the settings serialise");
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
