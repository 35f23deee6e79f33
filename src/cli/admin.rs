//! Company, agent, key and user administration.

use anyhow::bail;
use serde_json::json;

use super::Output;
use crate::agents::AgentKind;
use crate::auth::KeySecret;
use crate::auth::api_key::new_key_id;
use crate::clock::{Clock, rfc3339_ms};
use crate::config::{
    AgentCommand, CompanyCommand, KeyCommand, LlmArgs, SigningKeyCommand, UserCommand, UserTarget,
};
use crate::db::{
    Agent, AgentUpdate, AuditEvent, AuditQuery, Db, KeyPolicy, LlmUpdate, NewAgent, UserRef,
    WebhookSecret,
};

/// Records what an operator did in the audit trail.
async fn audit(db: &Db, kind: &str, company_id: &str, event: AuditEvent) -> anyhow::Result<()> {
    let event = AuditEvent {
        at: Clock::default().now_ms(),
        kind: kind.to_owned(),
        outcome: "ok".to_owned(),
        company_id: company_id.to_owned(),
        detail: Some("cli".to_owned()),
        ..event
    };
    db.insert_audit_events(std::sync::Arc::new(vec![event]))
        .await?;
    Ok(())
}

/// Operator-chosen ids become part of tokens and URLs: keep them plain.
fn check_id(kind: &str, id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !ok {
        bail!("{kind} id {id:?} must be 1–128 letters, digits, '_', '-' or '.'");
    }
    Ok(())
}

fn id_or_new(kind: &str, prefix: &str, id: Option<String>) -> anyhow::Result<String> {
    match id {
        Some(id) => {
            check_id(kind, &id)?;
            Ok(id)
        }
        None => Ok(format!("{prefix}_{}", cuid2::create_id())),
    }
}

pub async fn company(db: &Db, cmd: CompanyCommand, out: Output) -> anyhow::Result<()> {
    let now = Clock::default().now_ms();
    match cmd {
        CompanyCommand::Create { name, id } => {
            let id = id_or_new("company", "company", id)?;
            let c = db.insert_company(&id, &name, now).await?;
            audit(db, "company.created", &c.id, AuditEvent::default()).await?;
            out.print(&c, || format!("created company {} ({})", c.id, c.name));
        }
        CompanyCommand::List => {
            let list = db.list_companies().await?;
            out.print(&list, || {
                list.iter()
                    .map(|c| {
                        format!(
                            "{}\t{}\t{}\tdefault agent: {}",
                            c.id,
                            if c.active { "active" } else { "inactive" },
                            c.name,
                            c.default_agent_id.as_deref().unwrap_or("none")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CompanyCommand::Update { id, active } => {
            let c = db.set_company_active(&id, active, now).await?;
            audit(db, "company.updated", &c.id, AuditEvent::default()).await?;
            out.print(&c, || {
                format!(
                    "company {} is now {}",
                    c.id,
                    if c.active { "active" } else { "inactive" }
                )
            });
        }
    }
    Ok(())
}

pub async fn agent(db: &Db, cmd: AgentCommand, out: Output) -> anyhow::Result<()> {
    let now = Clock::default().now_ms();
    let agent_event = |a: &Agent| AuditEvent {
        agent_id: Some(a.id.clone()),
        ..Default::default()
    };
    match cmd {
        AgentCommand::Create {
            company,
            name,
            id,
            inactive,
            default,
            kind,
            webhook_url,
            llm,
        } => {
            let id = id_or_new("agent", "agent", id)?;
            check_kind(kind, webhook_url.as_deref(), None)?;
            let prompt = read_prompt(&llm)?;
            let llm = check_llm(kind, &llm, prompt.as_deref(), None)?;
            let new = NewAgent {
                id: &id,
                company_id: &company,
                name: &name,
                active: !inactive,
                make_default: default,
                kind: kind.as_str(),
                webhook_url: webhook_url.as_deref(),
                llm,
            };
            let a = db.insert_agent_of_kind(&new, now).await?;
            audit(db, "agent.created", &a.company_id, agent_event(&a)).await?;
            let secret = match &a.webhook_url {
                Some(_) => Some(new_webhook_secret(db, &a, now, now).await?),
                None => None,
            };
            print_agent(out, "created", &a, secret.as_deref());
        }
        AgentCommand::Update {
            id,
            active,
            name,
            default,
            kind,
            webhook_url,
            llm,
        } => {
            if active.is_none()
                && name.is_none()
                && !default
                && kind.is_none()
                && webhook_url.is_none()
                && llm.is_empty()
            {
                bail!(
                    "nothing to change: give --active, --name, --default, --kind, --webhook-url \
                     or an --llm-… setting"
                );
            }
            let Some(current) = db.find_agent_by_id(&id).await? else {
                bail!("no agent {id:?}");
            };
            let kind = kind
                .or_else(|| AgentKind::of(&current.kind))
                .unwrap_or(AgentKind::Human);
            check_kind(kind, webhook_url.as_deref(), current.webhook_url.as_deref())?;
            let prompt = read_prompt(&llm)?;
            let llm = check_llm(kind, &llm, prompt.as_deref(), Some(&current))?;
            let update = AgentUpdate {
                name: name.as_deref(),
                active,
                make_default: default,
                kind: Some(kind.as_str()),
                webhook_url: webhook_url.as_deref(),
                llm,
            };
            let a = db.update_agent(&id, update, now).await?;
            audit(db, "agent.updated", &a.company_id, agent_event(&a)).await?;
            // The first URL set makes the secret that signs for it.
            let secret = match &webhook_url {
                Some(_) if db.webhook_secrets(&a.id, now).await?.is_empty() => {
                    Some(new_webhook_secret(db, &a, now, now).await?)
                }
                _ => None,
            };
            print_agent(out, "updated", &a, secret.as_deref());
        }
        AgentCommand::RollWebhookSecret { id, expire_old_in } => {
            let Some(a) = db.find_agent_by_id(&id).await? else {
                bail!("no agent {id:?}");
            };
            if a.webhook_url.is_none() {
                bail!("agent {id:?} has no webhook: set one with agent update --webhook-url");
            }
            let old_expire_at = now + expire_old_in.as_millis() as i64;
            let secret = new_webhook_secret(db, &a, now, old_expire_at).await?;
            audit(
                db,
                "agent.webhook_secret_rolled",
                &a.company_id,
                agent_event(&a),
            )
            .await?;
            out.print(
                &json!({
                    "agentId": a.id,
                    "webhookSecret": secret,
                    "oldSecretsExpireAt": rfc3339_ms(old_expire_at),
                }),
                || {
                    format!(
                        "new webhook signing secret for agent {}: {secret}\n\
                         It is shown only now. Until {} every webhook is signed with the old \
                         secrets too, so that the receiver can move to this one meanwhile.",
                        a.id,
                        rfc3339_ms(old_expire_at)
                    )
                },
            );
        }
        AgentCommand::List { company } => {
            let list = db.list_agents(&company).await?;
            out.print(&list, || {
                list.iter()
                    .map(describe_agent)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

fn describe_agent(a: &Agent) -> String {
    let kind = AgentKind::of(&a.kind);
    let webhook = match (&a.webhook_url, a.webhook_disabled_at, &a.llm_model) {
        (Some(url), None, _) if kind == Some(AgentKind::Webhook) => format!("\t{url}"),
        (Some(url), Some(at), _) if kind == Some(AgentKind::Webhook) => {
            format!("\t{url} (disabled {}: it answered 410)", rfc3339_ms(at))
        }
        (_, _, Some(model)) if kind == Some(AgentKind::Openai) => format!(
            "\t{model} at {}",
            a.llm_base_url.as_deref().unwrap_or_default()
        ),
        _ => String::new(),
    };
    format!(
        "{}\t{}\t{}\t{}{}{}",
        a.id,
        if a.active { "active" } else { "inactive" },
        a.kind,
        a.name,
        if a.is_default { "\t(default)" } else { "" },
        webhook
    )
}

/// An agent as `create` and `update` print it, with its new webhook secret if one was made.
fn print_agent(out: Output, done: &str, a: &Agent, secret: Option<&str>) {
    let mut value = serde_json::to_value(a).expect("serialisable");
    if let Some(secret) = secret {
        value["webhookSecret"] = json!(secret);
    }
    out.print(&value, || {
        let mut text = format!("{done} agent {}", describe_agent(a));
        if let Some(secret) = secret {
            text.push_str(&format!(
                "\nwebhook signing secret: {secret}\n\
                 It is shown only now: give it to the receiver, which verifies every request \
                 with it (Standard Webhooks)."
            ));
        }
        text
    });
}

/// What a kind needs: a webhook agent a URL (given now or set before); a URL only a
/// webhook agent.
fn check_kind(
    kind: AgentKind,
    new_url: Option<&str>,
    current_url: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(url) = new_url {
        crate::agents::check_url(url).map_err(anyhow::Error::msg)?;
    }
    match kind {
        AgentKind::Webhook if new_url.or(current_url).is_none() => {
            bail!("a webhook agent needs --webhook-url")
        }
        AgentKind::Webhook => Ok(()),
        _ if new_url.is_some() => {
            bail!("--webhook-url is for webhook agents: add --kind webhook")
        }
        _ => Ok(()),
    }
}

/// The system prompt of `--system-prompt-file`, read.
fn read_prompt(llm: &LlmArgs) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    let Some(path) = &llm.system_prompt_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the system prompt file {}", path.display()))?;
    if text.trim().is_empty() {
        bail!("the system prompt file {} is empty", path.display());
    }
    Ok(Some(text))
}

/// An `openai` agent needs an endpoint and a model (given now or set before); the LLM
/// settings are only for `openai` agents.
fn check_llm<'a>(
    kind: AgentKind,
    llm: &'a LlmArgs,
    prompt: Option<&'a str>,
    current: Option<&Agent>,
) -> anyhow::Result<LlmUpdate<'a>> {
    if let Some(url) = &llm.llm_base_url {
        crate::agents::check_url(url).map_err(anyhow::Error::msg)?;
    }
    if let Some(var) = &llm.llm_api_key_env
        && (var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        bail!(
            "--llm-api-key-env takes the name of an environment variable, such as OPENAI_API_KEY"
        );
    }
    let has = |given: bool, set: Option<&Option<String>>| given || set.is_some_and(Option::is_some);
    match kind {
        AgentKind::Openai => {
            if !has(llm.llm_base_url.is_some(), current.map(|a| &a.llm_base_url)) {
                bail!("an openai agent needs --llm-base-url");
            }
            if !has(llm.llm_model.is_some(), current.map(|a| &a.llm_model)) {
                bail!("an openai agent needs --llm-model");
            }
        }
        _ if !llm.is_empty() => {
            bail!("the --llm-… settings are for openai agents: add --kind openai")
        }
        _ => {}
    }
    Ok(LlmUpdate {
        base_url: llm.llm_base_url.as_deref(),
        model: llm.llm_model.as_deref(),
        api_key_env: llm.llm_api_key_env.as_deref(),
        system_prompt: prompt,
        history: llm.llm_history,
        timeout_ms: llm.llm_timeout.map(|d| d.as_millis() as i64),
        handoff_on_failure: llm.handoff_on_failure,
    })
}

/// Makes a new webhook signing secret for the agent; the ones it had expire at
/// `old_expire_at`.
async fn new_webhook_secret(
    db: &Db,
    a: &Agent,
    now: i64,
    old_expire_at: i64,
) -> anyhow::Result<String> {
    let secret = WebhookSecret {
        id: format!("whs_{}", cuid2::create_id()),
        secret: crate::agents::signature::generate_secret(),
        created_at: now,
        expires_at: None,
    };
    db.add_webhook_secret(&a.id, &secret, old_expire_at).await?;
    Ok(secret.secret)
}

pub async fn key(db: &Db, cmd: KeyCommand, out: Output) -> anyhow::Result<()> {
    let now = Clock::default().now_ms();
    match cmd {
        KeyCommand::Create {
            company,
            scopes,
            allowed_agents,
            max_expires_in,
        } => {
            let policy = KeyPolicy {
                scopes,
                allowed_agents: allowed_agents.map(|a| {
                    a.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
                max_expires_in: max_expires_in.map(|d| d.as_secs() as i64),
            };
            let (key, secret) = create_key(db, &company, &policy, now).await?;
            let event = AuditEvent {
                key_id: Some(key.id.clone()),
                ..Default::default()
            };
            audit(db, "key.created", &key.company_id, event).await?;
            out.print(
                &json!({
                    "keyId": key.id,
                    "keySecret": secret.expose(),
                    "companyId": key.company_id,
                    "scopes": key.scopes,
                    "allowedAgents": key.allowed_agents,
                    "maxExpiresIn": key.max_expires_in,
                    "createdAt": rfc3339_ms(key.created_at),
                }),
                || {
                    format!(
                        "created API key for company {}\n  keyId:     {}\n  keySecret: {}\n\
                         The secret is shown only now: store it in your backend's secrets.",
                        key.company_id,
                        key.id,
                        secret.expose()
                    )
                },
            );
        }
        KeyCommand::List { company } => {
            let list = db.list_api_keys(&company).await?;
            out.print(&list, || {
                list.iter()
                    .map(|k| {
                        let state = match k.revoked_at {
                            Some(t) => format!("revoked {}", rfc3339_ms(t)),
                            None => "active".to_owned(),
                        };
                        format!("{}\t{}\tcreated {}", k.id, state, rfc3339_ms(k.created_at))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeyCommand::Roll {
            key_id,
            expire_old_in,
        } => {
            let secret = KeySecret::generate();
            let old_until = now + expire_old_in.as_millis() as i64;
            let k = db
                .roll_api_key(&key_id, &secret.hash(), old_until, now)
                .await?;
            let event = AuditEvent {
                key_id: Some(k.id.clone()),
                ..Default::default()
            };
            audit(db, "key.rolled", &k.company_id, event).await?;
            out.print(
                &json!({
                    "keyId": k.id,
                    "keySecret": secret.expose(),
                    "previousSecretExpiresAt": rfc3339_ms(old_until),
                }),
                || {
                    format!(
                        "rolled API key {}\n  keySecret: {}\nThe old secret keeps working until {}.",
                        k.id,
                        secret.expose(),
                        rfc3339_ms(old_until)
                    )
                },
            );
        }
        KeyCommand::Revoke { key_id } => {
            let k = db.revoke_api_key(&key_id, now).await?;
            let event = AuditEvent {
                key_id: Some(k.id.clone()),
                ..Default::default()
            };
            audit(db, "key.revoked", &k.company_id, event).await?;
            out.print(&k, || format!("revoked API key {}", k.id));
        }
    }
    Ok(())
}

/// Makes a key pair; the secret is returned to be shown once and is stored only as a hash.
pub async fn create_key(
    db: &Db,
    company: &str,
    policy: &KeyPolicy,
    now_ms: i64,
) -> anyhow::Result<(crate::db::ApiKey, KeySecret)> {
    let secret = KeySecret::generate();
    let key = db
        .insert_api_key_with(&new_key_id(), company, &secret.hash(), policy, now_ms)
        .await?;
    Ok((key, secret))
}

pub async fn signing_key(db: &Db, cmd: SigningKeyCommand, out: Output) -> anyhow::Result<()> {
    let now = Clock::default().now_ms();
    match cmd {
        SigningKeyCommand::Rotate { retire_old_in } => {
            let mut secret = [0u8; 32];
            rand::fill(&mut secret);
            let id = format!("sig_{}", cuid2::create_id());
            let retire_at = now + retire_old_in.as_millis() as i64;
            db.rotate_signing_key(&id, &secret, retire_at, now).await?;
            out.print(
                &json!({"signingKeyId": id, "previousKeysRetireAt": rfc3339_ms(retire_at)}),
                || {
                    format!(
                        "new tokens are now signed with {id}; older keys verify until {}",
                        rfc3339_ms(retire_at)
                    )
                },
            );
        }
        SigningKeyCommand::List => {
            let keys = db.list_signing_keys().await?;
            // signing: the newest; verifying: until its retirement; retired: its tokens are
            // refused (and once the clean-up has run, its secret is erased).
            let state_of = |k: &crate::db::StoredSigningKey| match k.retire_at {
                _ if k.is_erased() => "retired, secret erased",
                None => "signing",
                Some(at) if now < at => "verifying",
                Some(_) => "retired",
            };
            let list: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "id": k.id,
                        "state": state_of(k),
                        "createdAt": rfc3339_ms(k.created_at),
                        "retireAt": k.retire_at.map(rfc3339_ms),
                    })
                })
                .collect();
            out.print(&list, || {
                keys.iter()
                    .map(|k| {
                        let mut line = format!(
                            "{}\t{}\tcreated {}",
                            k.id,
                            state_of(k),
                            rfc3339_ms(k.created_at)
                        );
                        if let Some(at) = k.retire_at {
                            line.push_str(&format!("\tretires {}", rfc3339_ms(at)));
                        }
                        line
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

pub async fn user(db: &Db, cmd: UserCommand, out: Output) -> anyhow::Result<()> {
    let now = Clock::default().now_ms();
    match cmd {
        UserCommand::Invalidate(target) => {
            let user_ref = target.user_ref();
            let Some(u) = db.invalidate_user(&target.company, user_ref, now).await? else {
                bail!("company {:?} has no such user", target.company);
            };
            let event = AuditEvent {
                user_id: Some(u.id.clone()),
                ..Default::default()
            };
            audit(db, "user.invalidated", &u.company_id, event).await?;
            out.print(
                &json!({
                    "invalidated": true,
                    "user": {"id": u.id, "externalId": u.external_id, "companyId": u.company_id},
                    "invalidatedAt": rfc3339_ms(u.invalidated_at.unwrap_or(now)),
                }),
                || {
                    format!(
                        "invalidated every token of user {} ({})",
                        u.id, u.external_id
                    )
                },
            );
        }
        UserCommand::Erase(target) => {
            let Some(u) = db
                .erase_user(&target.company, target.user_ref(), now)
                .await?
            else {
                bail!("company {:?} has no such user", target.company);
            };
            // The event names the erased id, nothing of what they said.
            let event = AuditEvent {
                user_id: Some(u.id.clone()),
                ..Default::default()
            };
            audit(db, "user.erased", &u.company_id, event).await?;
            out.print(
                &json!({
                    "erased": true,
                    "user": {"id": u.id, "companyId": u.company_id},
                    "erasedAt": rfc3339_ms(now),
                }),
                || format!("erased user {} with their conversations", u.id),
            );
        }
    }
    Ok(())
}

pub async fn audit_read(
    db: &Db,
    company: &str,
    since: Option<std::time::Duration>,
    user: Option<&str>,
    limit: i64,
    out: Output,
) -> anyhow::Result<()> {
    let since_ms = since.map(|d| Clock::default().now_ms() - d.as_millis() as i64);
    let query = AuditQuery {
        company_id: company,
        since_ms,
        user_id: user,
        before_id: None,
        limit: limit.clamp(1, 10_000),
    };
    let events = db.list_audit_events(&query).await?;
    out.print(&events, || {
        events
            .iter()
            .map(|e| {
                let mut line = format!("{}  {:<18} {:<10}", rfc3339_ms(e.at), e.kind, e.outcome);
                for (name, value) in [
                    ("key", &e.key_id),
                    ("user", &e.user_id),
                    ("agent", &e.agent_id),
                    ("jti", &e.jti),
                    ("ip", &e.client_ip),
                    ("via", &e.detail),
                ] {
                    if let Some(v) = value {
                        line.push_str(&format!(" {name}={v}"));
                    }
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

impl UserTarget {
    fn user_ref(&self) -> UserRef<'_> {
        match (&self.user, &self.external_id) {
            (Some(id), _) => UserRef::Id(id),
            // clap requires one of the two.
            (None, ext) => UserRef::External(ext.as_deref().unwrap_or_default()),
        }
    }
}
