//! The command line: every setting is a flag and an environment variable `PERFORMCHAT_…`
//! (a flag wins over the variable). The doc comment of each field is its `--help` text.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::auth::ExpiresIn;

#[derive(Debug, Parser)]
#[command(
    name = "performchat",
    version,
    about = "Self-hosted chat-auth server: mints short-lived chat tokens for your users"
)]
pub struct Cli {
    /// Database: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        global = true,
        env = "PERFORMCHAT_DATABASE_URL",
        default_value = "sqlite://performchat.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server. On an empty database, first creates a company, an agent and an
    /// API key and prints them once.
    Serve(Settings),
    /// Apply database migrations and exit (the server also applies them at start).
    Migrate,
    /// Companies: the tenants that own keys, agents and users.
    #[command(subcommand)]
    Company(CompanyCommand),
    /// Agents a company's users chat with.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// API key pairs (keyId + keySecret) a company's backend mints tokens with.
    #[command(subcommand)]
    Key(KeyCommand),
    /// End users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "PERFORMCHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Longest token lifetime a request may ask for with expiresIn (a duration: "30d", "720h").
    #[arg(long, env = "PERFORMCHAT_MAX_EXPIRES_IN", default_value = "30d", value_parser = ExpiresIn::parse_setting)]
    pub max_expires_in: ExpiresIn,

    /// Seconds of clock difference tolerated when checking a token's exp and iat.
    #[arg(long, env = "PERFORMCHAT_TOKEN_LEEWAY", default_value_t = 0)]
    pub token_leeway: u32,

    /// The iss claim of minted tokens; tokens with another iss are refused.
    #[arg(long, env = "PERFORMCHAT_ISSUER", default_value = "performchat")]
    pub issuer: String,

    /// Milliseconds between reads of the change log (invalidations, revocations,
    /// deactivations made by other instances or the CLI).
    #[arg(long, env = "PERFORMCHAT_CHANGE_POLL_MS", default_value_t = 200)]
    pub change_poll_ms: u64,

    /// Seconds the change log may go unread (database unreachable) before token
    /// verification answers 503 rather than trust a stale revocation list.
    #[arg(long, env = "PERFORMCHAT_MAX_STALENESS", default_value_t = 5)]
    pub max_staleness: u32,
}

impl Default for Settings {
    fn default() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        // The defaults live in the attributes above: parse an empty command line.
        Only::parse_from(["performchat"]).settings
    }
}

#[derive(Debug, Subcommand)]
pub enum CompanyCommand {
    /// Create a company.
    Create {
        #[arg(long)]
        name: String,
        /// Its id (e.g. company_xyz); generated if omitted.
        #[arg(long)]
        id: Option<String>,
    },
    /// List companies.
    List,
    /// Activate or deactivate a company. A deactivated company mints nothing and its
    /// tokens stop verifying.
    Update {
        id: String,
        #[arg(long, action = clap::ArgAction::Set)]
        active: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent. A company's first agent becomes its default.
    Create {
        #[arg(long)]
        company: String,
        #[arg(long)]
        name: String,
        /// Its id (e.g. agent_abc); generated if omitted.
        #[arg(long)]
        id: Option<String>,
        /// Create it inactive.
        #[arg(long)]
        inactive: bool,
        /// Make it the company's default agent.
        #[arg(long)]
        default: bool,
    },
    /// Change an agent. Deactivating one stops its tokens from verifying until it is
    /// active again.
    Update {
        id: String,
        #[arg(long, action = clap::ArgAction::Set)]
        active: Option<bool>,
        #[arg(long)]
        name: Option<String>,
        /// Make it the company's default agent.
        #[arg(long)]
        default: bool,
    },
    /// List a company's agents.
    List {
        #[arg(long)]
        company: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key pair. The secret is shown this once.
    Create {
        #[arg(long)]
        company: String,
    },
    /// List a company's keys (never their secrets).
    List {
        #[arg(long)]
        company: String,
    },
    /// Revoke a key: it mints nothing more and every token it minted stops verifying.
    Revoke { key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Invalidate every token a user holds now; tokens minted afterwards work.
    Invalidate {
        #[arg(long)]
        company: String,
        /// The internal user id (user.id in the token response).
        #[arg(
            long,
            conflicts_with = "external_id",
            required_unless_present = "external_id"
        )]
        user: Option<String>,
        /// The company's own user id (userId in the token request).
        #[arg(long)]
        external_id: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::default();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.max_expires_in, ExpiresIn::DEFAULT_MAX);
        assert_eq!(s.token_leeway, 0);
        assert_eq!(s.issuer, "performchat");
    }
}
