//! `POST /rest/v1/auth/token` as the vendor docs describe it, through the real server.

mod common;

use std::collections::HashSet;

use common::{assert_error, claims, spawn_app};
use serde_json::{Value, json};

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[tokio::test]
async fn the_documented_curl_request_gets_exactly_the_documented_body() {
    let app = spawn_app().await;
    let res = app
        .mint(json!({"userId": "user_123", "agentId": "agent_abc", "expiresIn": "1h"}))
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(keys(&body), ["agent", "token", "user"]);
    assert_eq!(
        keys(&body["user"]),
        ["agentId", "companyId", "externalId", "id"]
    );
    assert_eq!(keys(&body["agent"]), ["active", "id", "name"]);
    assert_eq!(body["user"]["externalId"], "user_123");
    assert_eq!(body["user"]["companyId"], "company_xyz");
    assert_eq!(body["user"]["agentId"], "agent_abc");
    assert_eq!(
        body["agent"],
        json!({"id": "agent_abc", "name": "Support Agent", "active": true})
    );
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    let c = claims(token);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn the_token_carries_the_promised_claims() {
    let app = spawn_app().await;
    let body = app.mint_ok("user_123").await;
    let c = claims(body["token"].as_str().unwrap());
    assert_eq!(c["sub"], body["user"]["id"]);
    assert_eq!(c["companyId"], "company_xyz");
    assert_eq!(c["agentId"], "agent_abc");
    assert_eq!(c["iss"], "performchat");
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let now = app.clock.now_s();
    assert!((c["iat"].as_i64().unwrap() - now).abs() <= 2);
    // The key secret is never in the token.
    assert!(
        !body["token"]
            .as_str()
            .unwrap()
            .contains(&app.tenant.key_secret)
    );
    let raw = serde_json::to_string(&c).unwrap();
    assert!(!raw.contains(&app.tenant.key_secret));
}

#[tokio::test]
async fn expires_in_accepts_the_documented_forms() {
    let app = spawn_app().await;
    for (expires_in, secs) in [
        (json!("7d"), 604_800),
        (json!("1h"), 3600),
        (json!("90m"), 5400),
        (json!("1.5h"), 5400),
        (json!("2 days"), 172_800),
        (json!(7200), 7200),
        (Value::Null, 86_400),
    ] {
        let res = app
            .mint(json!({"userId": "u", "expiresIn": expires_in}))
            .await;
        assert_eq!(res.status(), 200, "{expires_in}");
        let body: Value = res.json().await.unwrap();
        let c = claims(body["token"].as_str().unwrap());
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            secs,
            "{expires_in}"
        );
    }
    // Omitted entirely: 24h, as the docs say.
    let body: Value = app.mint(json!({"userId": "u"})).await.json().await.unwrap();
    let c = claims(body["token"].as_str().unwrap());
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        86_400
    );
}

#[tokio::test]
async fn a_numeric_user_id_is_kept_as_its_decimal_text() {
    let app = spawn_app().await;
    let res = app.mint(json!({"userId": 4242})).await;
    assert_eq!(res.status(), 200);
    let numeric: Value = res.json().await.unwrap();
    assert_eq!(numeric["user"]["externalId"], "4242");
    // The same user as the string "4242".
    let text = app.mint_ok("4242").await;
    assert_eq!(numeric["user"]["id"], text["user"]["id"]);
}

#[tokio::test]
async fn without_agent_id_the_company_default_agent_is_used() {
    let app = spawn_app().await;
    // The Python and PHP examples omit agentId; Ruby's .compact drops a nil one.
    for body in [
        json!({"userId": "user_123"}),
        json!({"userId": "user_123", "agentId": null}),
    ] {
        let res = app.mint(body).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["agent"]["id"], "agent_abc");
        assert_eq!(body["user"]["agentId"], "agent_abc");
    }
}

#[tokio::test]
async fn a_company_without_a_default_agent_must_name_one() {
    let app = spawn_app().await;
    let now = app.clock.now_ms();
    app.db
        .insert_company("company_bare", "Bare", now)
        .await
        .unwrap();
    let secret = performchat::auth::KeySecret::generate();
    let bare_key = performchat::auth::api_key::new_key_id();
    app.db
        .insert_api_key(&bare_key, "company_bare", &secret.hash(), now)
        .await
        .unwrap();
    app.synced().await;
    let res = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": bare_key, "keySecret": secret.expose(), "userId": "u"}),
        )
        .await;
    assert_error(res, 400, "invalid_request", "agentId is required").await;
}

#[tokio::test]
async fn user_id_is_stable_and_per_company() {
    let app = spawn_app().await;
    let first = app.mint_ok("user_123").await;
    let again = app.mint_ok("user_123").await;
    let id = first["user"]["id"].as_str().unwrap();
    assert_eq!(again["user"]["id"], id);
    assert!(cuid2::is_cuid2(id), "{id} is not a CUID2");
    assert_ne!(app.mint_ok("user_456").await["user"]["id"], id);

    let other = app.add_tenant("company_other", "agent_other").await;
    let theirs = app.mint_as(&other, "user_123").await;
    assert_eq!(theirs["user"]["companyId"], "company_other");
    assert_ne!(theirs["user"]["id"], id);
}

#[tokio::test]
async fn every_token_has_its_own_jti() {
    let app = spawn_app().await;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let token = app.token_for("user_123").await;
        assert!(seen.insert(claims(&token)["jti"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn fifty_concurrent_first_requests_get_one_user_id() {
    let app = spawn_app().await;
    let body = app.with_key(&app.tenant, json!({"userId": "brand_new_user"}));
    let url = app.url("/rest/v1/auth/token");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let req = app.client.post(&url).json(&body);
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 200);
                res.json::<Value>().await.unwrap()["user"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let res = app
        .mint(json!({"userId": "u", "locale": "fr", "extra": {"a": [1]}}))
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_unknown_key_and_a_wrong_secret_answer_identically() {
    let app = spawn_app().await;
    let unknown = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": "pk_nobody", "keySecret": app.tenant.key_secret, "userId": "u"}),
        )
        .await;
    let unknown = assert_error(unknown, 401, "invalid_credentials", "keyId or keySecret").await;
    let wrong = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": app.tenant.key_id, "keySecret": "sk_wrong", "userId": "u"}),
        )
        .await;
    let wrong = assert_error(wrong, 401, "invalid_credentials", "keyId or keySecret").await;
    assert_eq!(unknown, wrong);
}

#[tokio::test]
async fn field_errors_name_the_field() {
    let app = spawn_app().await;
    let key = |v: Value| app.with_key(&app.tenant, v);
    let cases = [
        (
            json!({"keySecret": "sk_x", "userId": "u"}),
            "keyId is required",
        ),
        (
            json!({"keyId": "pk_x", "userId": "u"}),
            "keySecret is required",
        ),
        (
            json!({"keyId": 5, "keySecret": "sk_x", "userId": "u"}),
            "keyId must be a string",
        ),
        (key(json!({})), "userId is required"),
        (key(json!({"userId": null})), "userId is required"),
        (key(json!({"userId": ""})), "userId must not be empty"),
        (
            key(json!({"userId": "a".repeat(257)})),
            "userId must be at most 256 characters",
        ),
        (
            key(json!({"userId": "a\u{0}b"})),
            "userId must not contain control characters",
        ),
        (
            key(json!({"userId": true})),
            "userId must be a string or an integer",
        ),
        (
            key(json!({"userId": 1.5})),
            "userId must be a string or an integer",
        ),
        (
            key(json!({"userId": "u", "agentId": 7})),
            "agentId must be a string",
        ),
        (
            key(json!({"userId": "u", "expiresIn": "3600"})),
            "expiresIn has no unit",
        ),
        (
            key(json!({"userId": "u", "expiresIn": "soon"})),
            "expiresIn is not a duration",
        ),
        (
            key(json!({"userId": "u", "expiresIn": "59s"})),
            "between 60 seconds (1m) and 2592000 seconds (30d)",
        ),
        (
            key(json!({"userId": "u", "expiresIn": "31d"})),
            "between 60 seconds (1m) and 2592000 seconds (30d)",
        ),
        (
            key(json!({"userId": "u", "expiresIn": -1})),
            "expiresIn must be between",
        ),
        (
            key(json!({"userId": "u", "expiresIn": [1]})),
            "expiresIn must be a string",
        ),
    ];
    for (body, says) in cases {
        let res = app.post("/rest/v1/auth/token", &body).await;
        assert_error(res, 400, "invalid_request", says).await;
    }
}

#[tokio::test]
async fn the_maximum_lifetime_is_a_server_setting() {
    let settings = performchat::config::Settings {
        max_expires_in: performchat::auth::ExpiresIn::from_secs(7200),
        ..Default::default()
    };
    let app = common::spawn_app_with(settings).await;
    let res = app.mint(json!({"userId": "u", "expiresIn": "3h"})).await;
    assert_error(res, 400, "invalid_request", "7200 seconds (2h)").await;
    assert_eq!(
        app.mint(json!({"userId": "u", "expiresIn": "2h"}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn refused_keys_agents_and_companies_get_their_status() {
    let app = spawn_app().await;
    let now = app.clock.now_ms();
    // 404: an agent that does not exist, or belongs to another company.
    let res = app
        .mint(json!({"userId": "u", "agentId": "agent_nope"}))
        .await;
    assert_error(res, 404, "agent_not_found", "agent_nope").await;
    let other = app.add_tenant("company_other", "agent_other").await;
    let res = app
        .mint(json!({"userId": "u", "agentId": other.agent}))
        .await;
    assert_error(res, 404, "agent_not_found", "agent_other").await;

    // Changes made straight in the database (as the CLI does) apply through the change
    // feed, within a second; `synced` waits for it.
    // 403: an inactive agent.
    let update = performchat::db::AgentUpdate {
        active: Some(false),
        ..Default::default()
    };
    app.db.update_agent("agent_abc", update, now).await.unwrap();
    app.synced().await;
    let res = app.mint(json!({"userId": "u"})).await;
    assert_error(res, 403, "agent_inactive", "agent_abc").await;
    let update = performchat::db::AgentUpdate {
        active: Some(true),
        ..Default::default()
    };
    app.db.update_agent("agent_abc", update, now).await.unwrap();
    app.synced().await;

    // 403: an inactive company.
    app.db
        .set_company_active("company_xyz", false, now)
        .await
        .unwrap();
    app.synced().await;
    let res = app.mint(json!({"userId": "u"})).await;
    assert_error(res, 403, "company_inactive", "inactive").await;
    app.db
        .set_company_active("company_xyz", true, now)
        .await
        .unwrap();
    app.synced().await;

    // 403: a revoked key (only a correct secret learns it).
    app.db
        .revoke_api_key(&app.tenant.key_id, now)
        .await
        .unwrap();
    app.synced().await;
    let res = app.mint(json!({"userId": "u"})).await;
    assert_error(res, 403, "key_revoked", "revoked").await;
    let res = app
        .post(
            "/rest/v1/auth/token",
            &json!({"keyId": app.tenant.key_id, "keySecret": "sk_guess", "userId": "u"}),
        )
        .await;
    assert_error(res, 401, "invalid_credentials", "keyId or keySecret").await;
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused() {
    let app = spawn_app().await;
    let url = app.url("/rest/v1/auth/token");
    let send = |ct: Option<&'static str>, body: String| {
        let mut req = app.client.post(&url).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let valid = app
        .with_key(&app.tenant, json!({"userId": "u"}))
        .to_string();

    let res = send(Some("text/plain"), valid.clone()).await.unwrap();
    assert_error(
        res,
        415,
        "unsupported_media_type",
        "Content-Type: application/json",
    )
    .await;
    let res = send(None, valid.clone()).await.unwrap();
    assert_error(res, 415, "unsupported_media_type", "application/json").await;
    let res = send(
        Some("application/x-www-form-urlencoded"),
        "keyId=pk&userId=u".into(),
    )
    .await
    .unwrap();
    assert_error(res, 415, "unsupported_media_type", "application/json").await;

    let res = send(Some("application/json"), r#"{"keyId": "pk_"#.into())
        .await
        .unwrap();
    assert_error(res, 400, "invalid_json", "not valid JSON").await;
    let res = send(Some("application/json"), "[1, 2]".into())
        .await
        .unwrap();
    assert_error(res, 400, "invalid_json", "must be a JSON object").await;
    let res = send(
        Some("application/json"),
        r#"{"userId":"a","userId":"b"}"#.into(),
    )
    .await
    .unwrap();
    assert_error(res, 400, "invalid_json", "must not repeat a key").await;
    let res = send(Some("application/json"), String::new()).await.unwrap();
    assert_error(res, 400, "invalid_json", "not valid JSON").await;

    let huge = json!({"userId": "u", "pad": "x".repeat(17 * 1024)}).to_string();
    let res = send(Some("application/json"), huge).await.unwrap();
    assert_error(res, 413, "payload_too_large", "16384 bytes").await;

    // A charset parameter is fine.
    let res = send(Some("application/json; charset=utf-8"), valid)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/rest/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found", "no route").await;
    let res = app
        .client
        .get(app.url("/rest/v1/auth/token"))
        .send()
        .await
        .unwrap();
    assert_error(res, 405, "method_not_allowed", "method").await;
}

#[tokio::test]
async fn error_messages_never_quote_secrets() {
    let app = spawn_app().await;
    let secret = &app.tenant.key_secret;
    let bodies = [
        format!(
            r#"{{"keyId":"{}","keySecret":"{secret}" "userId":"u"}}"#,
            app.tenant.key_id
        ),
        format!(r#""{secret}""#),
        format!(r#"{{"keyId":"pk_x","keySecret":"{secret}","userId":"u"}}"#),
    ];
    for body in bodies {
        let res = app
            .client
            .post(app.url("/rest/v1/auth/token"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error());
        assert!(!res.text().await.unwrap().contains(secret.as_str()));
    }
}
