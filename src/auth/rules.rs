//! What an API key may do: its scopes, the agents it may mint for, and the longest token
//! lifetime it may ask for.

use super::ExpiresIn;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `POST /rest/v1/auth/token`.
    Mint,
    /// Invalidate, revoke, introspect, read the audit trail.
    Manage,
    /// The company side of the chat: list conversations, read and reply, close.
    Chat,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Mint => "mint",
            Scope::Manage => "manage",
            Scope::Chat => "chat",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRules {
    pub mint: bool,
    pub manage: bool,
    pub chat: bool,
    /// None: any agent of the key's company.
    pub allowed_agents: Option<Vec<String>>,
    /// None: the server's maximum.
    pub max_expires_in: Option<ExpiresIn>,
}

impl Default for KeyRules {
    fn default() -> Self {
        KeyRules {
            mint: true,
            manage: true,
            chat: true,
            allowed_agents: None,
            max_expires_in: None,
        }
    }
}

impl KeyRules {
    /// From the stored columns (`scopes` and `allowed_agents` comma-separated).
    pub fn from_stored(
        scopes: &str,
        allowed_agents: Option<&str>,
        max_expires_in: Option<i64>,
    ) -> Self {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let scopes = list(scopes);
        KeyRules {
            mint: scopes.iter().any(|s| s == "mint"),
            manage: scopes.iter().any(|s| s == "manage"),
            chat: scopes.iter().any(|s| s == "chat"),
            allowed_agents: allowed_agents.map(list),
            max_expires_in: max_expires_in.map(|s| ExpiresIn::from_secs(s.max(0) as u64)),
        }
    }

    /// Parses `--scopes` (any of "mint", "manage", "chat", comma-separated) into the stored
    /// form.
    pub fn parse_scopes(s: &str) -> Result<String, String> {
        let mut out = Vec::new();
        for scope in s.split(',').map(str::trim) {
            match scope {
                "mint" | "manage" | "chat" if !out.contains(&scope) => out.push(scope),
                "mint" | "manage" | "chat" => {}
                other => {
                    return Err(format!(
                        "unknown scope {other:?}: use mint, manage, chat, or several"
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err("give at least one scope: mint, manage, chat".to_owned());
        }
        Ok(out.join(","))
    }

    pub fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Mint => self.mint,
            Scope::Manage => self.manage,
            Scope::Chat => self.chat,
        }
    }

    pub fn allows_agent(&self, agent_id: &str) -> bool {
        self.allowed_agents
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == agent_id))
    }

    /// The key's maximum, within the server's.
    pub fn max_expires_in(&self, server_max: ExpiresIn) -> ExpiresIn {
        self.max_expires_in
            .map_or(server_max, |m| m.min(server_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rules_read_back() {
        let r = KeyRules::from_stored("mint", Some("a1, a2"), Some(3600));
        assert!(r.allows(Scope::Mint) && !r.allows(Scope::Manage));
        assert!(r.allows_agent("a2") && !r.allows_agent("a3"));
        assert_eq!(
            r.max_expires_in(ExpiresIn::DEFAULT_MAX),
            ExpiresIn::from_secs(3600)
        );
        assert_eq!(
            r.max_expires_in(ExpiresIn::from_secs(60)),
            ExpiresIn::from_secs(60),
            "never above the server's"
        );
        let all = KeyRules::from_stored("mint,manage,chat", None, None);
        assert_eq!(all, KeyRules::default());
    }

    #[test]
    fn scope_lists_are_checked() {
        assert_eq!(KeyRules::parse_scopes("mint").unwrap(), "mint");
        assert_eq!(
            KeyRules::parse_scopes("manage, mint,mint").unwrap(),
            "manage,mint"
        );
        assert!(KeyRules::parse_scopes("admin").is_err());
        assert!(KeyRules::parse_scopes("").is_err());
    }
}
