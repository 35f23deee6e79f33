//! The command line: every setting is a flag and an environment variable `PERFORMCHAT_…`
//! (a flag wins over the variable). The doc comment of each field is its `--help` text, and
//! its serialized name is its flag's (what `performchat config` prints).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Serialize, Serializer};

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

    /// Log format on stderr: text (for people) or json (one object per line).
    #[arg(long, global = true, env = "PERFORMCHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A TOML file of settings, keyed by their flag names (`listen = "0.0.0.0:8080"`).
    /// Flags win over environment variables, which win over the file.
    #[arg(long, global = true, env = "PERFORMCHAT_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Which `token.minted` events the audit trail keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMints {
    All,
    Refusals,
    Off,
}

impl AuditMints {
    /// Whether a mint with this outcome is recorded.
    pub fn keeps(self, refused: bool) -> bool {
        match self {
            AuditMints::All => true,
            AuditMints::Refusals => refused,
            AuditMints::Off => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server. On an empty database, first creates a company, an agent and an
    /// API key and prints them once.
    Serve(Settings),
    /// Apply database migrations and exit (the server also applies them at start).
    Migrate,
    /// Print the effective configuration (flags, environment, config file, defaults), with
    /// secrets hidden.
    Config(Settings),
    /// Read the audit trail of a company, newest first.
    Audit {
        #[arg(long)]
        company: String,
        /// Only events this recent (a duration: "1h", "7d").
        #[arg(long, value_parser = crate::auth::expires_in::parse_duration_setting)]
        since: Option<std::time::Duration>,
        /// Only events of this user (the internal user id).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
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
    /// The server's token-signing keys.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Start signing with a new key. Tokens signed with the previous keys keep verifying until
    /// they expire; then those keys are erased.
    Rotate {
        /// When the previous keys are erased: the longest token lifetime the servers accept.
        #[arg(long, default_value = "30d", value_parser = crate::auth::expires_in::parse_duration_setting)]
        retire_old_in: std::time::Duration,
    },
    /// List signing keys (ids and dates, never secrets).
    List,
}

/// The settings of the server. Serialized (by `performchat config`) keyed by flag name, each
/// value in a form its flag accepts back.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "PERFORMCHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Longest token lifetime a request may ask for with expiresIn (a duration: "30d", "720h").
    #[arg(long, env = "PERFORMCHAT_MAX_EXPIRES_IN", default_value = "30d", value_parser = ExpiresIn::parse_setting)]
    #[serde(serialize_with = "expires_in_setting")]
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

    /// How long audit events are kept (a duration: "90d").
    #[arg(long, env = "PERFORMCHAT_AUDIT_RETENTION", default_value = "90d", value_parser = crate::auth::expires_in::parse_duration_setting)]
    #[serde(serialize_with = "duration_setting")]
    pub audit_retention: Duration,

    /// Which token mints the audit trail keeps: all, refusals (a mint refused: the agent not
    /// allowed or inactive, the rate limit, a lifetime over the key's maximum) or off. Every
    /// other event (keys, agents, companies, invalidations, revocations) is always kept.
    #[arg(long, env = "PERFORMCHAT_AUDIT_MINTS", value_enum, default_value_t = AuditMints::All)]
    pub audit_mints: AuditMints,

    /// How long `token.minted` events are kept (a duration: "30d"): by default as long as the
    /// longest token may live, so that any token still usable can be traced to its mint.
    #[arg(long, env = "PERFORMCHAT_AUDIT_MINT_RETENTION", default_value = "30d", value_parser = crate::auth::expires_in::parse_duration_setting)]
    #[serde(serialize_with = "duration_setting")]
    pub audit_mint_retention: Duration,

    /// Seconds that in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "PERFORMCHAT_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u32,

    /// Tokens per second one API key may mint (0: no limit).
    #[arg(long, env = "PERFORMCHAT_MINT_RATE", default_value_t = 1000)]
    pub mint_rate: u32,

    /// How many mints above the rate one API key may burst (0: the rate).
    #[arg(long, env = "PERFORMCHAT_MINT_BURST", default_value_t = 2000)]
    pub mint_burst: u32,

    /// Failed authentications per minute per client IP and per keyId before a block, which
    /// doubles with each repeat up to 15 minutes (0: no limit).
    #[arg(
        long,
        env = "PERFORMCHAT_AUTH_FAILURES_PER_MINUTE",
        default_value_t = 30
    )]
    pub auth_failures_per_minute: u32,

    /// Distinct new users one API key may create per UTC day (0: no quota).
    #[arg(
        long,
        env = "PERFORMCHAT_NEW_USERS_PER_KEY_PER_DAY",
        default_value_t = 0
    )]
    pub new_users_per_key_per_day: u64,

    /// Chat messages per second one end user may send (0: no limit).
    #[arg(long, env = "PERFORMCHAT_CHAT_SEND_RATE", default_value_t = 20)]
    pub chat_send_rate: u32,

    /// How many messages above the rate one end user may burst (0: the rate).
    #[arg(long, env = "PERFORMCHAT_CHAT_SEND_BURST", default_value_t = 40)]
    pub chat_send_burst: u32,

    /// Seconds between the WebSocket pings a chat socket gets (keeps proxies from closing
    /// a quiet connection; set it below their idle timeout).
    #[arg(long, env = "PERFORMCHAT_CHAT_PING_INTERVAL", default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..))]
    pub chat_ping_interval: u32,

    /// Seconds a chat socket may stay silent (not even answering pings) before it is dropped.
    #[arg(long, env = "PERFORMCHAT_CHAT_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub chat_idle_timeout: u32,

    /// How long a streamed agent reply may go without a chunk before it is finished as
    /// `failed` with the text it has (a duration: "60s").
    #[arg(long, env = "PERFORMCHAT_STREAM_TIMEOUT", default_value = "60s", value_parser = crate::auth::expires_in::parse_duration_setting)]
    #[serde(serialize_with = "duration_setting")]
    pub stream_timeout: Duration,

    /// How long a webhook agent's endpoint may take to answer one event before the attempt
    /// counts as failed (a duration: "10s").
    #[arg(long, env = "PERFORMCHAT_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = crate::auth::expires_in::parse_duration_setting)]
    #[serde(serialize_with = "duration_setting")]
    pub webhook_timeout: Duration,

    /// Origins allowed to call GET /rest/v1/auth/me from a browser, comma-separated, or * for
    /// any. Key endpoints never answer CORS.
    #[arg(long, env = "PERFORMCHAT_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,

    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "PERFORMCHAT_REQUEST_TIMEOUT", default_value_t = 10)]
    pub request_timeout: u32,

    /// Serve the demo page at /demo: the widget as an end user sees it beside an agent's pane,
    /// with tokens minted on the server for demo users of --demo-company. Refused on an
    /// address other than loopback unless --demo-public.
    #[arg(long, env = "PERFORMCHAT_DEMO", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Let --demo serve on an address other than loopback (anyone who reaches it can chat as a
    /// demo user and answer as the company's agents).
    #[arg(long, env = "PERFORMCHAT_DEMO_PUBLIC", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub demo_public: bool,

    /// The company whose agents the demo page talks with.
    #[arg(
        long,
        env = "PERFORMCHAT_DEMO_COMPANY",
        default_value = "company_default"
    )]
    pub demo_company: String,
}

/// An `ExpiresIn` setting as its flag takes it: whole seconds, `"2592000s"`.
fn expires_in_setting<S: Serializer>(value: &ExpiresIn, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{}s", value.secs()))
}

/// A duration setting as its flag takes it: `"7776000s"`, or `"1500ms"` when it is not a
/// whole number of seconds.
fn duration_setting<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if value.subsec_nanos() == 0 {
        s.collect_str(&format_args!("{}s", value.as_secs()))
    } else {
        s.collect_str(&format_args!("{}ms", value.as_millis()))
    }
}

impl Settings {
    pub fn limits(&self) -> crate::limits::LimitSettings {
        crate::limits::LimitSettings {
            mint_rate: self.mint_rate,
            mint_burst: if self.mint_burst == 0 {
                self.mint_rate
            } else {
                self.mint_burst
            },
            auth_failures_per_minute: self.auth_failures_per_minute,
            new_users_per_key_per_day: self.new_users_per_key_per_day,
            chat_send_rate: self.chat_send_rate,
            chat_send_burst: if self.chat_send_burst == 0 {
                self.chat_send_rate
            } else {
                self.chat_send_burst
            },
        }
    }
}

impl Cli {
    /// Parses the command line, then fills every setting that neither a flag nor the
    /// environment gave from the `--config` file, if there is one.
    pub fn load() -> anyhow::Result<Cli> {
        Self::load_from(std::env::args_os().collect())
    }

    pub fn load_from(mut args: Vec<std::ffi::OsString>) -> anyhow::Result<Cli> {
        use anyhow::Context as _;
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};

        let matches = Cli::command().try_get_matches_from(&args)?;
        let Some(path) = matches.get_one::<std::path::PathBuf>("config").cloned() else {
            return Ok(Cli::from_arg_matches(&matches)?);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        let top = Cli::command();
        let serve = top.find_subcommand("serve").expect("serve exists").clone();
        let has = |cmd: &clap::Command, id: &str| cmd.get_arguments().any(|a| a.get_id() == id);
        let (sub_name, sub_matches) = matches.subcommand().expect("a subcommand is required");
        let invoked = top
            .find_subcommand(sub_name)
            .expect("the invoked subcommand exists");
        for (key, value) in table {
            let id = key.replace('-', "_");
            if id == "config" || !(has(&top, &id) || has(&serve, &id)) {
                anyhow::bail!("config file {}: unknown setting {key:?}", path.display());
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => anyhow::bail!(
                    "config file {}: {key} must be a string, a number or a boolean",
                    path.display()
                ),
            };
            let source = if has(&top, &id) {
                matches.value_source(&id)
            } else if has(invoked, &id) {
                sub_matches.value_source(&id)
            } else {
                // A server setting, and this command is not the server: not its concern.
                continue;
            };
            if matches!(source, None | Some(ValueSource::DefaultValue)) {
                args.push(format!("--{key}").into());
                args.push(value.into());
            }
        }
        let matches = Cli::command()
            .try_get_matches_from(&args)
            .with_context(|| format!("in config file {}", path.display()))?;
        Ok(Cli::from_arg_matches(&matches)?)
    }
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
        /// What answers for it: human (the company's backend, through the agent API),
        /// webhook (the company's bot, sent every event as a signed webhook) or openai (an LLM
        /// behind an OpenAI-compatible endpoint).
        #[arg(long, value_enum, default_value = "human")]
        kind: crate::agents::AgentKind,
        /// Where a webhook agent's events go (http or https). Setting it prints the signing
        /// secret (whsec_…) once.
        #[arg(long)]
        webhook_url: Option<String>,
        #[command(flatten)]
        llm: LlmArgs,
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
        /// What answers for it: human, webhook or openai.
        #[arg(long, value_enum)]
        kind: Option<crate::agents::AgentKind>,
        /// Where a webhook agent's events go (http or https); also enables a webhook that
        /// answered 410 Gone. The first one set prints the signing secret once.
        #[arg(long)]
        webhook_url: Option<String>,
        #[command(flatten)]
        llm: LlmArgs,
    },
    /// Make a new signing secret for an agent's webhooks, printed once. The old ones keep
    /// signing too (every request carries a signature of each) until they expire.
    RollWebhookSecret {
        id: String,
        /// How long the old secrets keep signing (a duration of at least one second: "24h").
        #[arg(long, default_value = "24h", value_parser = crate::auth::expires_in::parse_duration_setting)]
        expire_old_in: Duration,
    },
    /// List a company's agents.
    List {
        #[arg(long)]
        company: String,
    },
}

/// An `openai` agent's settings, on `agent create` and `agent update`.
#[derive(Debug, Default, clap::Args)]
pub struct LlmArgs {
    /// An openai agent's OpenAI-compatible endpoint, up to its /v1 (Ollama's:
    /// http://127.0.0.1:11434/v1; llama.cpp's server: http://127.0.0.1:8080/v1).
    #[arg(long)]
    pub llm_base_url: Option<String>,
    /// The model to ask (as the endpoint names it: llama3.2, gpt-4o-mini, …).
    #[arg(long)]
    pub llm_model: Option<String>,
    /// The server's environment variable that holds the endpoint's API key, read when a reply
    /// starts (the key is never stored and never logged). None: no Authorization header.
    #[arg(long)]
    pub llm_api_key_env: Option<String>,
    /// A file whose text becomes the system prompt (stored with the agent).
    #[arg(long)]
    pub system_prompt_file: Option<std::path::PathBuf>,
    /// How many of the conversation's messages go with each request (default 20).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=200))]
    pub llm_history: Option<i64>,
    /// The longest wait for the endpoint's next bytes: its answer, then each chunk (a
    /// duration; default "30s").
    #[arg(long, value_parser = crate::auth::expires_in::parse_duration_setting)]
    pub llm_timeout: Option<Duration>,
    /// Whether a failed reply hands the conversation to a person (default true).
    #[arg(long, action = clap::ArgAction::Set)]
    pub handoff_on_failure: Option<bool>,
}

impl LlmArgs {
    pub fn is_empty(&self) -> bool {
        self.llm_base_url.is_none()
            && self.llm_model.is_none()
            && self.llm_api_key_env.is_none()
            && self.system_prompt_file.is_none()
            && self.llm_history.is_none()
            && self.llm_timeout.is_none()
            && self.handoff_on_failure.is_none()
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key pair. The secret is shown this once.
    Create {
        #[arg(long)]
        company: String,
        /// What the key may do, comma-separated: mint (the token endpoint), manage
        /// (invalidate, revoke, introspect, audit), chat (the company side of the chat).
        #[arg(long, default_value = "mint,manage,chat", value_parser = crate::auth::KeyRules::parse_scopes)]
        scopes: String,
        /// Comma-separated agent ids the key may mint for (default: any of its company's).
        #[arg(long)]
        allowed_agents: Option<String>,
        /// The longest expiresIn the key may ask for (default: the server's maximum).
        #[arg(long, value_parser = crate::auth::expires_in::parse_duration_setting)]
        max_expires_in: Option<std::time::Duration>,
    },
    /// Give a key a new secret (shown once). The old secret keeps working for a while, so
    /// that backends can switch without downtime.
    Roll {
        key_id: String,
        /// How long the old secret keeps working.
        #[arg(long, default_value = "24h", value_parser = crate::auth::expires_in::parse_duration_setting)]
        expire_old_in: std::time::Duration,
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
    Invalidate(UserTarget),
    /// Erase a user: their conversations and messages are deleted, their tokens refused and
    /// their open chat sockets closed (the audit trail keeps that it happened, without
    /// content). Minting again for their id makes a new user.
    Erase(UserTarget),
}

/// Which user a command is about.
#[derive(Debug, Args)]
pub struct UserTarget {
    #[arg(long)]
    pub company: String,
    /// The internal user id (user.id in the token response).
    #[arg(
        long,
        conflicts_with = "external_id",
        required_unless_present = "external_id"
    )]
    pub user: Option<String>,
    /// The company's own user id (userId in the token request).
    #[arg(long)]
    pub external_id: Option<String>,
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

    #[test]
    fn settings_serialize_under_their_flag_names_in_a_form_the_flags_take_back() {
        let s = Settings {
            audit_retention: Duration::from_millis(1500),
            ..Settings::default()
        };
        let value = serde_json::to_value(&s).unwrap();
        assert_eq!(value["max-expires-in"], "2592000s");
        assert_eq!(value["audit-retention"], "1500ms");
        assert_eq!(value["listen"], "127.0.0.1:8080");
        assert_eq!(value["token-leeway"], 0);
        for flag in ["max-expires-in", "audit-retention"] {
            let text = value[flag].as_str().unwrap();
            assert!(
                crate::auth::expires_in::parse_duration_setting(text).is_ok(),
                "{flag} = {text}"
            );
        }
        assert_eq!(
            serde_json::to_value(Settings::default()).unwrap()["audit-retention"],
            "7776000s"
        );
    }
}
