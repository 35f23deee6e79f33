//! The real `performchat` binary: first-start banner, operator commands, their effect on a
//! running server within a second, and durability under kill -9.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Server, TestDb, cli, cli_json, create_acme};
use performchat::db::{Db, UserRef};
use serde_json::{Value, json};

async fn mint(client: &reqwest::Client, server: &Server, body: &Value) -> reqwest::Response {
    client
        .post(server.url("/rest/v1/auth/token"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn me_status(client: &reqwest::Client, server: &Server, token: &str) -> (u16, Value) {
    let res = client
        .get(server.url("/rest/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Polls /me until it answers `status`, and returns how long that took (at most 1 s).
async fn within_a_second(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    status: u16,
) -> Duration {
    let start = Instant::now();
    loop {
        let (got, body) = me_status(client, server, token).await;
        if got == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still {got} after 1 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn first_start_prints_a_working_key_pair_and_curl_command_once() {
    let db = TestDb::new().await;
    let server = Server::start(&db.url, &[]);
    let out = &server.stdout;
    assert!(out.contains("keyId      pk_"), "{out}");
    assert!(out.contains("keySecret  sk_"), "{out}");
    let curl_at = out.find("curl -X POST").expect("a curl command");
    let curl = &out[curl_at..];
    assert!(curl.contains(&server.base));

    // Paste it into a shell, as a newcomer would.
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let res = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{curl} -s"))
            .output()
            .unwrap();
        let body: Value = serde_json::from_slice(&res.stdout).expect("curl got JSON");
        assert_eq!(body["user"]["externalId"], "user_123");
        assert!(
            body["token"]
                .as_str()
                .unwrap()
                .starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.")
        );
    }

    // The secret went to stdout only, never to the logs.
    let secret = out
        .split("keySecret  ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    // The request's log line is written by a background thread: wait for it.
    let mut logs: Vec<String> = server
        .logs
        .recv_timeout(Duration::from_secs(5))
        .into_iter()
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    logs.extend(server.logs.try_iter());
    assert!(
        logs.iter().any(|l| l.contains("/rest/v1/auth/token")),
        "{logs:#?}"
    );
    assert!(logs.iter().all(|l| !l.contains(&secret)));
    drop(server);

    let again = Server::start(&db.url, &[]);
    assert!(!again.stdout.contains("keySecret"), "{}", again.stdout);
}

#[tokio::test]
async fn the_banner_is_json_with_the_json_flag() {
    let db = TestDb::new().await;
    let server = Server::start(&db.url, &["--json"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    assert!(
        banner["bootstrap"]["keySecret"]
            .as_str()
            .unwrap()
            .starts_with("sk_")
    );
    assert_eq!(banner["bootstrap"]["companyId"], "company_default");
}

#[tokio::test]
async fn operators_manage_companies_agents_and_keys() {
    let db = TestDb::new().await;
    let url = &db.url;
    let company = create_acme(url);
    assert_eq!(company["id"], "company_acme");
    let generated = cli_json(url, &["company", "create", "--name", "Beta"]);
    assert!(generated["id"].as_str().unwrap().starts_with("company_"));
    let list = cli_json(url, &["company", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);

    let first = cli_json(
        url,
        &[
            "agent",
            "create",
            "--company",
            "company_acme",
            "--name",
            "Support Agent",
            "--id",
            "agent_abc",
        ],
    );
    assert_eq!(first["isDefault"], true, "the first agent is the default");
    let second = cli_json(
        url,
        &[
            "agent",
            "create",
            "--company",
            "company_acme",
            "--name",
            "Sales",
            "--inactive",
        ],
    );
    assert_eq!(second["isDefault"], false);
    assert_eq!(second["active"], false);
    let second_id = second["id"].as_str().unwrap();
    let updated = cli_json(
        url,
        &[
            "agent",
            "update",
            second_id,
            "--active",
            "true",
            "--name",
            "Sales Bot",
            "--default",
        ],
    );
    assert_eq!(updated["active"], true);
    assert_eq!(updated["name"], "Sales Bot");
    assert_eq!(updated["isDefault"], true);
    let agents = cli_json(url, &["agent", "list", "--company", "company_acme"]);
    assert_eq!(agents.as_array().unwrap().len(), 2);

    let key = cli_json(url, &["key", "create", "--company", "company_acme"]);
    let key_id = key["keyId"].as_str().unwrap();
    let secret = key["keySecret"].as_str().unwrap();
    assert!(key_id.starts_with("pk_") && secret.starts_with("sk_"));
    let keys = cli(url, &["key", "list", "--company", "company_acme"]);
    assert!(
        keys.contains(key_id) && !keys.contains(secret),
        "the secret is shown once only"
    );
    let revoked = cli_json(url, &["key", "revoke", key_id]);
    assert!(common::is_recent_wire_time(&revoked["revokedAt"]));

    // Mistakes are refused with a message and a failure status.
    for args in [
        vec!["company", "create", "--name", "Dup", "--id", "company_acme"],
        vec![
            "agent",
            "create",
            "--company",
            "company_nope",
            "--name",
            "X",
        ],
        vec!["agent", "update", "agent_nope", "--active", "false"],
        vec!["key", "revoke", "pk_nope"],
        vec!["company", "create", "--name", "Bad", "--id", "has space"],
    ] {
        let out = common::performchat(url).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn every_time_in_json_output_is_rfc3339_utc_with_milliseconds() {
    use common::{is_recent_wire_time, wire_time};
    let db = TestDb::new().await;
    let url = &db.url;
    let company = cli_json(
        url,
        &["company", "create", "--name", "Acme", "--id", "company_t"],
    );
    assert!(is_recent_wire_time(&company["createdAt"]), "{company}");
    let listed = cli_json(url, &["company", "list"]);
    assert_eq!(listed[0]["createdAt"], company["createdAt"]);
    let updated = cli_json(url, &["company", "update", "company_t", "--active", "true"]);
    assert_eq!(updated["createdAt"], company["createdAt"]);

    let agent = cli_json(
        url,
        &["agent", "create", "--company", "company_t", "--name", "A"],
    );
    assert!(is_recent_wire_time(&agent["createdAt"]), "{agent}");
    let agent_id = agent["id"].as_str().unwrap();
    let updated = cli_json(url, &["agent", "update", agent_id, "--name", "B"]);
    assert_eq!(updated["createdAt"], agent["createdAt"]);
    let agents = cli_json(url, &["agent", "list", "--company", "company_t"]);
    assert_eq!(agents[0]["createdAt"], agent["createdAt"]);

    let key = cli_json(url, &["key", "create", "--company", "company_t"]);
    assert!(is_recent_wire_time(&key["createdAt"]), "{key}");
    let key_id = key["keyId"].as_str().unwrap();
    let keys = cli_json(url, &["key", "list", "--company", "company_t"]);
    assert_eq!(keys[0]["createdAt"], key["createdAt"]);
    assert!(keys[0]["revokedAt"].is_null(), "{keys}");
    assert!(keys[0]["previousExpiresAt"].is_null(), "{keys}");
    let rolled = cli_json(url, &["key", "roll", key_id, "--expire-old-in", "1h"]);
    let old_until = wire_time(&rolled["previousSecretExpiresAt"]);
    let keys = cli_json(url, &["key", "list", "--company", "company_t"]);
    assert_eq!(wire_time(&keys[0]["previousExpiresAt"]), old_until);
    let revoked = cli_json(url, &["key", "revoke", key_id]);
    assert!(is_recent_wire_time(&revoked["revokedAt"]), "{revoked}");
    let keys = cli_json(url, &["key", "list", "--company", "company_t"]);
    assert_eq!(keys[0]["revokedAt"], revoked["revokedAt"]);

    let rotated = cli_json(url, &["signing-key", "rotate", "--retire-old-in", "1h"]);
    wire_time(&rotated["previousKeysRetireAt"]);
    for k in cli_json(url, &["signing-key", "list"]).as_array().unwrap() {
        assert!(is_recent_wire_time(&k["createdAt"]), "{k}");
    }

    let events = cli_json(url, &["audit", "--company", "company_t"]);
    assert!(!events.as_array().unwrap().is_empty());
    for e in events.as_array().unwrap() {
        assert!(is_recent_wire_time(&e["at"]), "{e}");
    }
}

#[test]
fn config_prints_every_setting_and_no_database_password() {
    use clap::CommandFactory;
    // The settings: every long flag of `serve`, with the global options it reads (propagated
    // to it by `build`), less what is not a setting.
    let mut command = performchat::config::Cli::command();
    command.build();
    let flags: Vec<&str> = command
        .find_subcommand("serve")
        .unwrap()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|flag| !["help", "version", "config", "json"].contains(flag))
        .collect();
    assert!(flags.contains(&"database-url") && flags.contains(&"log-format"));
    assert!(flags.contains(&"listen") && flags.contains(&"request-timeout"));

    let url = "postgres://app:hunter2@localhost/pc";
    let run = |args: &[&str]| {
        let out = common::performchat(url).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["config"]);
    let json_text = run(&["--json", "config"]);
    assert!(!text.contains("hunter2") && !json_text.contains("hunter2"));
    let shown: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(shown["database-url"], "postgres://app:***@localhost/pc");
    let shown = shown.as_object().unwrap();
    for flag in &flags {
        assert!(
            shown.contains_key(*flag),
            "{flag} is missing from {json_text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{flag} = "))),
            "{flag} is missing from {text}"
        );
    }
    assert_eq!(shown.len(), flags.len(), "{json_text}");

    // Each value is in a form its flag takes back: given them all, config prints the same.
    let mut args = vec!["--json".to_owned()];
    args.push("config".to_owned());
    for (flag, value) in shown {
        args.push(format!("--{flag}"));
        args.push(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again: Value = serde_json::from_str(&run(&args)).unwrap();
    assert_eq!(&again, &Value::Object(shown.clone()));
}

#[tokio::test]
async fn cli_changes_reach_a_running_server_within_a_second() {
    let db = TestDb::new().await;
    let url = &db.url;
    let server = Server::start(url, &["--json"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    let b = &banner["bootstrap"];
    let client = reqwest::Client::new();
    let body = json!({"keyId": b["keyId"], "keySecret": b["keySecret"], "userId": "user_123"});
    let minted: Value = mint(&client, &server, &body).await.json().await.unwrap();
    let token = minted["token"].as_str().unwrap();
    assert_eq!(me_status(&client, &server, token).await.0, 200);

    cli(
        url,
        &["agent", "update", "agent_default", "--active", "false"],
    );
    within_a_second(&client, &server, token, 401).await;
    cli(
        url,
        &["agent", "update", "agent_default", "--active", "true"],
    );
    within_a_second(&client, &server, token, 200).await;

    cli(
        url,
        &["company", "update", "company_default", "--active", "false"],
    );
    within_a_second(&client, &server, token, 401).await;
    cli(
        url,
        &["company", "update", "company_default", "--active", "true"],
    );
    within_a_second(&client, &server, token, 200).await;

    cli(
        url,
        &[
            "user",
            "invalidate",
            "--company",
            "company_default",
            "--external-id",
            "user_123",
        ],
    );
    within_a_second(&client, &server, token, 401).await;
    let fresh: Value = mint(&client, &server, &body).await.json().await.unwrap();
    let fresh = fresh["token"].as_str().unwrap();
    assert_eq!(me_status(&client, &server, fresh).await.0, 200);

    let user_id = minted["user"]["id"].as_str().unwrap();
    cli(
        url,
        &[
            "user",
            "invalidate",
            "--company",
            "company_default",
            "--user",
            user_id,
        ],
    );
    within_a_second(&client, &server, fresh, 401).await;
    let fresh: Value = mint(&client, &server, &body).await.json().await.unwrap();
    let fresh = fresh["token"].as_str().unwrap();

    cli(url, &["key", "revoke", b["keyId"].as_str().unwrap()]);
    within_a_second(&client, &server, fresh, 401).await;
    let (_, body401) = me_status(&client, &server, fresh).await;
    assert_eq!(body401["error"]["code"], "token_revoked");
    let res = mint(&client, &server, &body).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn kill_9_under_load_loses_no_answered_user() {
    let db = TestDb::new().await;
    let mut server = Server::start(&db.url, &["--json"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    let b = banner["bootstrap"].clone();
    let url = server.url("/rest/v1/auth/token");
    let client = reqwest::Client::new();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (client, url, b) = (client.clone(), url.clone(), b.clone());
            tokio::spawn(async move {
                let mut answered = HashMap::new();
                for i in 0.. {
                    let external = format!("load_{w}_{i}");
                    let body = json!({"keyId": b["keyId"], "keySecret": b["keySecret"], "userId": external});
                    let Ok(res) = client.post(&url).json(&body).send().await else { break };
                    if res.status() != 200 {
                        break;
                    }
                    let Ok(body) = res.json::<Value>().await else { break };
                    answered.insert(external, body["user"]["id"].as_str().unwrap().to_owned());
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill(); // SIGKILL: no shutdown, no flush.
    let mut answered = HashMap::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    assert!(
        answered.len() > 20,
        "too little load to prove anything: {}",
        answered.len()
    );

    let db = Db::connect(&db.url).await.unwrap();
    for (external, id) in &answered {
        let user = db
            .find_user("company_default", UserRef::External(external))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("answered user {external} was lost"));
        assert_eq!(&user.id, id);
    }
}

#[tokio::test]
async fn migrate_applies_the_schema_and_is_idempotent() {
    let db = TestDb::new().await;
    assert_eq!(cli_json(&db.url, &["migrate"]), json!({"migrated": true}));
    assert_eq!(cli_json(&db.url, &["migrate"]), json!({"migrated": true}));
    assert_eq!(cli_json(&db.url, &["company", "list"]), json!([]));
}

#[test]
fn a_bad_database_url_is_explained() {
    let out = common::performchat("mysql://localhost/x")
        .args(["company", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sqlite://") && stderr.contains("postgres://"),
        "{stderr}"
    );
}
