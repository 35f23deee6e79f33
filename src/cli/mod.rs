//! The operator commands. `serve` runs the server; the rest change the database directly,
//! and running servers pick their changes up through the change log within a second.

mod admin;
mod serve;

use serde::Serialize;

use crate::config::{Cli, Command};
use crate::db::Db;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Company(c) => admin::company(&connect(&cli.database_url).await?, c, out).await,
        Command::Agent(c) => admin::agent(&connect(&cli.database_url).await?, c, out).await,
        Command::Key(c) => admin::key(&connect(&cli.database_url).await?, c, out).await,
        Command::User(c) => admin::user(&connect(&cli.database_url).await?, c, out).await,
    }
}

async fn connect(url: &str) -> anyhow::Result<Db> {
    Db::connect(url).await
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
