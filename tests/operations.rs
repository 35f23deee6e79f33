//! Running it: health, readiness, metrics, request ids, the audit trail, configuration
//! precedence, JSON logs, and graceful shutdown — through the real server and binary.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, Tenant, TestApp, TestDb, cli, cli_json, create_acme, spawn_app};
use serde_json::{Value, json};

fn basic(t: &Tenant) -> String {
    let pair = format!("{}:{}", t.key_id, t.key_secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn audit_page(app: &TestApp, tenant: &Tenant, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/rest/v1/audit{query}")))
        .header("authorization", basic(tenant))
        .send()
        .await
        .unwrap()
}

/// The audit events the API shows, once at least `n` are there (they are written in batches).
async fn audit_events(app: &TestApp, tenant: &Tenant, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = audit_page(app, tenant, "?limit=1000").await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let events = body["events"].as_array().unwrap().clone();
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a metric line that starts with `prefix`, or 0.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    res.text().await.unwrap()
}

#[tokio::test]
async fn health_and_readiness_answer_and_readiness_follows_the_database() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
    app.db.close().await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    common::assert_error(res, 503, "unavailable", "unavailable").await;
    // Alive all the same.
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    for i in 0..3 {
        app.mint_ok(&format!("user_{i}")).await;
    }
    app.mint_ok("user_0").await;
    let bad = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": "pk_x", "keySecret": "sk_x", "userId": "u"}),
        )
        .await;
    assert_eq!(bad.status(), 401);
    app.invalidate(&app.tenant, json!({"externalId": "user_1"}))
        .await;
    let token = app.token_for("user_2").await;
    app.post(
        "/rest/v1/auth/revoke",
        &app.with_key(&app.tenant, json!({"token": token})),
    )
    .await;

    let after = scrape(&app).await;
    let delta = |prefix: &str| metric(&after, prefix) - metric(&before, prefix);
    assert_eq!(delta("performchat_tokens_minted_total"), 5.0);
    assert_eq!(delta("performchat_users_created_total"), 3.0);
    assert_eq!(delta("performchat_auth_failures_total"), 1.0);
    assert_eq!(delta("performchat_invalidations_total"), 1.0);
    assert_eq!(delta("performchat_revocations_total"), 1.0);
    assert_eq!(
        delta(
            r#"performchat_http_requests_total{method="POST",route="/rest/v1/auth/token",status="200"}"#
        ),
        5.0
    );
    assert_eq!(
        delta(
            r#"performchat_http_requests_total{method="POST",route="/rest/v1/auth/token",status="401"}"#
        ),
        1.0
    );
    assert!(delta(r#"performchat_cache_hits_total{name="users"}"#) >= 1.0);
    assert!(after.contains("performchat_http_request_duration_seconds_bucket"));
    assert!(after.contains("performchat_change_feed_lag_milliseconds"));
    assert!(after.contains(r#"performchat_db_pool_connections{name="#));
    assert!(after.contains(r#"performchat_cache_entries{name="users"}"#));
}

#[tokio::test]
async fn every_route_is_counted_under_its_own_path() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/rest/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut expected = vec![("GET".to_owned(), "/rest/v1/openapi.json".to_owned())];
    // Every operation of the API (the document covers every API route, a unit test checks).
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let request = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .json(&json!({}));
            request.send().await.unwrap();
            expected.push((method, path.clone()));
        }
    }
    // Swagger UI: the redirect, the page, and its assets under one label.
    for (path, route) in [
        ("/rest/v1/docs", "/rest/v1/docs"),
        ("/rest/v1/docs/", "/rest/v1/docs/"),
        ("/rest/v1/docs/swagger-ui.css", "/rest/v1/docs/{*rest}"),
        (
            "/rest/v1/docs/swagger-initializer.js",
            "/rest/v1/docs/{*rest}",
        ),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        expected.push(("GET".to_owned(), route.to_owned()));
    }
    // A method a route does not have is still that route's (405); a path no route has is
    // "unmatched", whatever the path.
    let res = app
        .client
        .delete(app.url("/rest/v1/auth/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    expected.push(("DELETE".to_owned(), "/rest/v1/auth/token".to_owned()));
    for path in ["/no/such/route", "/rest/v1/auth/tokens", "/healthz/x"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    expected.push(("GET".to_owned(), "unmatched".to_owned()));

    let text = scrape(&app).await;
    for (method, route) in &expected {
        let counted = format!(
            r#"performchat_http_requests_total{{method="{method}",route="{route}",status="#
        );
        assert!(
            text.lines().any(|l| l.starts_with(&counted)),
            "no {counted}… in:\n{text}"
        );
        let timed =
            format!(r#"performchat_http_request_duration_seconds_count{{route="{route}"}}"#);
        assert!(metric(&text, &timed) >= 1.0, "no {timed} in:\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            r#"performchat_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        3.0
    );
    assert!(
        !text.contains("/no/such") && !text.contains("/rest/v1/auth/tokens"),
        "{text}"
    );
    assert!(!text.contains(r#"route="other""#), "{text}");
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-42.abc");
    let a = app.client.get(app.url("/healthz")).send().await.unwrap();
    let b = app.client.get(app.url("/healthz")).send().await.unwrap();
    let (a, b) = (&a.headers()["x-request-id"], &b.headers()["x-request-id"]);
    assert!(!a.is_empty() && a != b);
    // A hostile id is replaced, not echoed.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn the_audit_trail_records_token_events_and_shows_each_company_only_its_own() {
    let app = spawn_app().await;
    let other = app.add_tenant("company_other", "agent_other").await;
    let minted = app.mint_ok("user_123").await;
    let token = minted["token"].as_str().unwrap();
    app.post(
        "/rest/v1/auth/revoke",
        &app.with_key(&app.tenant, json!({"token": token})),
    )
    .await;
    app.invalidate(&app.tenant, json!({"userId": minted["user"]["id"]}))
        .await;
    app.mint(json!({"userId": "u", "agentId": "agent_nope"}))
        .await;
    app.post(
        "/rest/v1/auth/token",
        &app.with_key(&other, json!({"userId": "theirs"})),
    )
    .await;

    let events = audit_events(&app, &app.tenant, 4).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "token.minted",
            "user.invalidated",
            "token.revoked",
            "token.minted"
        ]
    );
    let refused = &events[0];
    assert_eq!(refused["outcome"], "agent_not_found");
    assert_eq!(refused["agentId"], "agent_nope");
    let first_mint = &events[3];
    assert_eq!(first_mint["outcome"], "ok");
    assert_eq!(first_mint["userId"], minted["user"]["id"]);
    assert_eq!(first_mint["agentId"], "agent_abc");
    assert_eq!(first_mint["keyId"], json!(app.tenant.key_id));
    assert_eq!(first_mint["jti"], common::claims(token)["jti"]);
    assert_eq!(first_mint["clientIp"], "127.0.0.1");
    assert_eq!(events[2]["jti"], first_mint["jti"]);
    assert!(events.iter().all(|e| e["companyId"] == "company_xyz"));
    // Times are RFC 3339 in UTC with milliseconds, newest first.
    for e in &events {
        assert!(common::is_recent_wire_time(&e["at"]), "{e}");
    }
    let times: Vec<_> = events.iter().map(|e| common::wire_time(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    let theirs = audit_events(&app, &other, 1).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["companyId"], "company_other");

    // Filters and pages.
    let res = audit_page(
        &app,
        &app.tenant,
        &format!("?user={}", minted["user"]["id"].as_str().unwrap()),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
    let page1: Value = audit_page(&app, &app.tenant, "?limit=3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page1["events"].as_array().unwrap().len(), 3);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let page2: Value = audit_page(&app, &app.tenant, &format!("?limit=3&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["events"].as_array().unwrap().len(), 1);
    assert_eq!(page2["events"][0]["kind"], "token.minted");
    assert!(page2["nextCursor"].is_null());
    let res = audit_page(&app, &app.tenant, "?since=1h").await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["events"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Credentials are required, and bad parameters are named.
    let res = app
        .client
        .get(app.url("/rest/v1/audit"))
        .send()
        .await
        .unwrap();
    common::assert_error(res, 401, "invalid_credentials", "Basic").await;
    let bad = Tenant {
        key_secret: "sk_wrong".into(),
        ..app.tenant.clone()
    };
    common::assert_error(
        audit_page(&app, &bad, "").await,
        401,
        "invalid_credentials",
        "keyId",
    )
    .await;
    common::assert_error(
        audit_page(&app, &app.tenant, "?limit=0").await,
        400,
        "invalid_request",
        "limit",
    )
    .await;
    common::assert_error(
        audit_page(&app, &app.tenant, "?since=soon").await,
        400,
        "invalid_request",
        "since",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_secret_for_a_companys_key_is_an_audit_event_of_that_company() {
    let app = spawn_app().await;
    let other = app.add_tenant("company_other", "agent_other").await;
    // Our keyId with another key's (well-formed) secret.
    let res = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": app.tenant.key_id, "keySecret": other.key_secret, "userId": "u1"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    // A keyId nobody has: nothing to file it under.
    let res = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": "pk_nobody", "keySecret": other.key_secret, "userId": "u1"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    app.mint_ok("user_123").await;

    let events = audit_events(&app, &app.tenant, 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["token.minted", "auth.failed"]);
    let failed = &events[1];
    assert_eq!(failed["outcome"], "invalid_credentials");
    assert_eq!(failed["keyId"], json!(app.tenant.key_id));
    assert_eq!(failed["companyId"], "company_xyz");
    assert_eq!(failed["clientIp"], "127.0.0.1");
    assert_eq!(failed["detail"], "scope mint");
    assert!(failed["userId"].is_null());
    // The secret presented is nowhere in the event.
    assert!(!failed.to_string().contains(&other.key_secret));
    // Nothing of it in the other company's trail (its key's secret was the one misused;
    // written before the mint seen above, in order).
    let theirs: Value = audit_page(&app, &other, "").await.json().await.unwrap();
    assert_eq!(theirs["events"], json!([]));
}

#[tokio::test]
async fn operator_changes_are_audited_and_readable_from_the_cli() {
    let db = TestDb::new().await;
    let url = &db.url;
    create_acme(url);
    cli(
        url,
        &[
            "agent",
            "create",
            "--company",
            "company_acme",
            "--name",
            "A",
            "--id",
            "agent_a",
        ],
    );
    cli(url, &["agent", "update", "agent_a", "--name", "B"]);
    let key = cli_json(url, &["key", "create", "--company", "company_acme"]);
    cli(url, &["key", "revoke", key["keyId"].as_str().unwrap()]);
    cli(
        url,
        &["company", "update", "company_acme", "--active", "false"],
    );
    cli(
        url,
        &[
            "company",
            "create",
            "--name",
            "Other",
            "--id",
            "company_other",
        ],
    );

    let events = cli_json(
        url,
        &["audit", "--company", "company_acme", "--since", "1h"],
    );
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "company.updated",
            "key.revoked",
            "key.created",
            "agent.updated",
            "agent.created",
            "company.created"
        ]
    );
    assert_eq!(events[1]["keyId"], key["keyId"]);
    for e in events.as_array().unwrap() {
        assert!(common::is_recent_wire_time(&e["at"]), "{e}");
    }
    let text = cli(url, &["audit", "--company", "company_acme"]);
    assert!(
        text.contains("key.revoked") && text.contains("via=cli"),
        "{text}"
    );
    let other = cli_json(url, &["audit", "--company", "company_other"]);
    assert_eq!(other.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn settings_come_from_flags_then_environment_then_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("performchat.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9001\"\nissuer = \"from-file\"\nmax-expires-in = \"7d\"\ntoken-leeway = 3\n",
    )
    .unwrap();
    let db = TestDb::new().await;
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = common::performchat(&db.url);
        cmd.args(["--json", "--config"])
            .arg(&file)
            .arg("config")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let from_file = run(&[], &[]);
    assert_eq!(from_file["listen"], "127.0.0.1:9001");
    assert_eq!(from_file["issuer"], "from-file");
    assert_eq!(from_file["max-expires-in"], "604800s");
    assert_eq!(from_file["token-leeway"], 3);
    assert_eq!(
        from_file["change-poll-ms"], 200,
        "untouched settings keep their defaults"
    );

    let env_wins = run(&[("PERFORMCHAT_ISSUER", "from-env")], &[]);
    assert_eq!(env_wins["issuer"], "from-env");
    let flag_wins = run(
        &[("PERFORMCHAT_ISSUER", "from-env")],
        &["--issuer", "from-flag", "--listen", "127.0.0.1:9002"],
    );
    assert_eq!(flag_wins["issuer"], "from-flag");
    assert_eq!(flag_wins["listen"], "127.0.0.1:9002");

    // Secrets are hidden.
    let out = common::performchat("postgres://app:hunter2@localhost/pc")
        .args(["--json", "config"])
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("app:***@localhost") && !shown.contains("hunter2"),
        "{shown}"
    );

    // A misspelt setting is refused, naming it.
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = common::performchat(&db.url)
        .arg("--config")
        .arg(&file)
        .arg("config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting \"lisen\""));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_flushes_the_audit_trail() {
    let db = TestDb::new().await;
    let mut server = Server::start(&db.url, &["--json", "--log-format", "json"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    let b = &banner["bootstrap"];
    let body = json!({"keyId": b["keyId"], "keySecret": b["keySecret"], "userId": "in_flight"})
        .to_string();
    let addr = server.base.trim_start_matches("http://").to_owned();

    // A request whose body is still arriving when the signal comes.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /rest/v1/auth/token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // New connections are soon no longer accepted...
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...but the one in flight completes.
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    // Every line, up to the end of its stderr (the reader thread may still be forwarding the
    // last ones when the process has exited).
    let logs: Vec<String> = server.logs.iter().collect();
    // JSON logs: one object per line, the request line with its fields.
    let request_line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["route"] == "/rest/v1/auth/token")
        .unwrap_or_else(|| panic!("no JSON request line in {logs:#?}"));
    assert_eq!(request_line["status"], 200);
    assert!(
        request_line["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(logs.iter().any(|l| l.contains("stopped")));

    // The minted token's audit event was written before the process ended.
    let events = cli_json(&db.url, &["audit", "--company", "company_default"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "token.minted" && e["outcome"] == "ok"),
        "{events}"
    );
    drop(server);
}

#[tokio::test]
async fn no_secret_or_token_reaches_the_logs() {
    let db = TestDb::new().await;
    let server = Server::start(&db.url, &["--json"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    let b = &banner["bootstrap"];
    let secret = b["keySecret"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(server.url(path)).json(&body).send();
    let minted: Value = post(
        "/rest/v1/auth/token",
        json!({"keyId": b["keyId"], "keySecret": secret, "userId": "u1"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    client
        .get(server.url("/rest/v1/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    post(
        "/rest/v1/auth/introspect",
        json!({"keyId": b["keyId"], "keySecret": secret, "token": token}),
    )
    .await
    .unwrap();
    post(
        "/rest/v1/auth/revoke",
        json!({"keyId": b["keyId"], "keySecret": secret, "token": token}),
    )
    .await
    .unwrap();
    post(
        "/rest/v1/auth/token",
        json!({"keyId": b["keyId"], "keySecret": "sk_wrong_guess_123", "userId": "u1"}),
    )
    .await
    .unwrap();
    client
        .post(server.url("/rest/v1/auth/token"))
        .header("content-type", "application/json")
        .body(format!("{{\"keySecret\":\"{secret}\" broken"))
        .send()
        .await
        .unwrap();
    // Log lines are written by a background thread: wait for all six request lines.
    let mut logs: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while logs.iter().filter(|l| l.contains("request")).count() < 6
        && std::time::Instant::now() < deadline
    {
        if let Ok(line) = server.logs.recv_timeout(Duration::from_millis(100)) {
            logs.push(line);
        }
    }
    logs.extend(server.logs.try_iter());
    assert!(logs.len() >= 6, "{logs:#?}");
    let signing_secret = {
        let db = performchat::db::Db::connect(&db.url).await.unwrap();
        db.list_signing_keys().await.unwrap().remove(0).secret
    };
    let signing_hex: String = signing_secret.iter().map(|b| format!("{b:02x}")).collect();
    for line in &logs {
        assert!(!line.contains(&secret), "key secret in: {line}");
        assert!(
            !line.contains("sk_wrong_guess_123"),
            "guessed secret in: {line}"
        );
        assert!(!line.contains(&token), "token in: {line}");
        assert!(
            !line.contains(token.split('.').nth(2).unwrap()),
            "token signature in: {line}"
        );
        assert!(!line.contains(&signing_hex), "signing secret in: {line}");
    }
}

#[tokio::test]
async fn the_api_description_and_its_docs_page_are_served_from_the_binary() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/rest/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/rest/v1/auth/token"]["post"].is_object());
    let page = app
        .client
        .get(app.url("/rest/v1/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    // The UI's own assets come with the binary, not from a CDN.
    assert!(
        !html.contains("://unpkg.com") && !html.contains("://cdn."),
        "{html}"
    );
    let css = app
        .client
        .get(app.url("/rest/v1/docs/swagger-ui.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
}

#[tokio::test]
async fn audit_events_past_their_retention_are_purged() {
    let app = spawn_app().await;
    let now = app.clock.now_ms();
    let event = |at: i64, kind: &str| performchat::db::AuditEvent {
        at,
        kind: kind.into(),
        outcome: "ok".into(),
        company_id: "company_xyz".into(),
        ..Default::default()
    };
    let day = 86_400_000;
    app.db
        .insert_audit_events(std::sync::Arc::new(vec![
            event(now - 100 * day, "user.invalidated"),
            event(now - 40 * day, "token.minted"),
            event(now - 60 * day, "key.revoked"),
            event(now - 20 * day, "token.minted"),
            event(now - day, "user.invalidated"),
        ]))
        .await
        .unwrap();
    // The server's own clean-up runs every ten minutes of its clock, with the default 90-day
    // retention, and 30 days for mints.
    assert_eq!(
        app.state.settings.audit_retention.as_millis() as i64,
        90 * day
    );
    assert_eq!(
        app.state.settings.audit_mint_retention.as_millis() as i64,
        30 * day
    );
    app.advance_clock(std::time::Duration::from_secs(601)).await;
    let mut left = Vec::new();
    for _ in 0..100 {
        left = audit_events(&app, &app.tenant, 3).await;
        if left.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left.len(), 3, "the periodic clean-up ran in the server");
    let at = |days: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now - days * day) * 1_000_000)
            .unwrap()
    };
    let kept: Vec<_> = left
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), common::wire_time(&e["at"])))
        .collect();
    assert_eq!(
        kept,
        [
            ("user.invalidated", at(1)),
            ("token.minted", at(20)),
            ("key.revoked", at(60)),
        ]
    );
}

#[tokio::test]
async fn the_audit_trail_keeps_all_mints_only_refusals_or_none_as_set() {
    for (setting, expected) in [
        ("all", vec!["ok", "agent_not_found"]),
        ("refusals", vec!["agent_not_found"]),
        ("off", vec![]),
    ] {
        let settings = performchat::config::Settings {
            audit_mints: clap::ValueEnum::from_str(setting, false).unwrap(),
            ..Default::default()
        };
        let app = common::spawn_app_with(settings).await;
        assert_eq!(
            app.mint(serde_json::json!({"userId": "u1"})).await.status(),
            200
        );
        let refused = app
            .mint(serde_json::json!({"userId": "u1", "agentId": "agent_nope"}))
            .await;
        assert_eq!(refused.status(), 404);
        // The invalidation is kept whatever the setting: it is not a mint.
        let user = app.mint_ok("u2").await["user"]["id"].clone();
        let invalidated = app
            .invalidate(&app.tenant, serde_json::json!({"userId": user}))
            .await;
        assert_eq!(invalidated.status(), 200);
        // Written in order by one writer: once the invalidation is there, the mints are.
        let mut events = Vec::new();
        for _ in 0..100 {
            events = audit_events(&app, &app.tenant, 1).await;
            if events.iter().any(|e| e["kind"] == "user.invalidated") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mints: Vec<&str> = events
            .iter()
            .filter(|e| e["kind"] == "token.minted")
            .filter(|e| e["userId"] != user)
            .map(|e| e["outcome"].as_str().unwrap())
            .collect();
        let mut expected = expected.clone();
        expected.reverse();
        assert_eq!(mints, expected, "--audit-mints {setting}: {events:?}");
        assert!(
            events.iter().any(|e| e["kind"] == "user.invalidated"),
            "--audit-mints {setting}"
        );
    }
}
