//! Token invalidation, revocation and verification through the real server: every token
//! dies the moment its user, key, agent or company is cut off, and lives again where that
//! is right.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{assert_error, claims, forge, spawn_app};
use performchat::db::AgentUpdate;
use serde_json::{Value, json};

async fn assert_alive(app: &common::TestApp, token: &str) -> Value {
    let res = app.me(token).await;
    assert_eq!(res.status(), 200, "token should verify");
    res.json().await.unwrap()
}

async fn assert_dead(app: &common::TestApp, token: &str, code: &str, says: &str) {
    assert_error(app.me(token).await, 401, code, says).await;
}

#[tokio::test]
async fn me_describes_the_token_holder() {
    let app = spawn_app().await;
    let minted = app.mint_ok("user_123").await;
    let token = minted["token"].as_str().unwrap();
    let me = assert_alive(&app, token).await;
    assert_eq!(me["user"], minted["user"]);
    assert_eq!(me["agent"], minted["agent"]);
    let exp = claims(token)["exp"].as_i64().unwrap();
    let expected = time::OffsetDateTime::from_unix_timestamp(exp).unwrap();
    assert_eq!(common::wire_time(&me["expiresAt"]), expected);
}

#[tokio::test]
async fn me_needs_a_bearer_token() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/rest/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_error(res, 401, "token_invalid", "Authorization: Bearer").await;
    let res = app
        .client
        .get(app.url("/rest/v1/auth/me"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid", "Authorization: Bearer").await;
    let token = app.token_for("u").await;
    let res = app
        .client
        .get(app.url("/rest/v1/auth/me"))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn invalidation_by_user_id_kills_older_tokens_and_spares_newer_ones_in_the_same_second() {
    let app = spawn_app().await;
    // The server's clock moved to the start of a second, so that the mints and the
    // invalidation below fall within one second (a token's `iat` is in whole seconds).
    let into_second = app.clock.now_ms().rem_euclid(1000) as u64;
    app.advance_clock(Duration::from_millis(1000 - into_second))
        .await;
    let minted = app.mint_ok("user_123").await;
    let old = minted["token"].as_str().unwrap().to_owned();
    let other_user = app.token_for("user_456").await;
    let res = app
        .invalidate(&app.tenant, json!({"userId": minted["user"]["id"]}))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["invalidated"], true);
    assert_eq!(body["user"]["id"], minted["user"]["id"]);
    assert_eq!(body["user"]["externalId"], "user_123");
    assert!(
        common::is_recent_wire_time(&body["invalidatedAt"]),
        "{body}"
    );
    // Minted right after, within the same second as the invalidation.
    let new = app.token_for("user_123").await;
    assert_eq!(
        claims(&old)["iat"],
        claims(&new)["iat"],
        "the mints took longer than the second they were given"
    );
    assert_dead(&app, &old, "token_revoked", "invalidated").await;
    assert_alive(&app, &new).await;
    assert_alive(&app, &other_user).await;
}

#[tokio::test]
async fn invalidation_by_external_id_works_too() {
    let app = spawn_app().await;
    let old = app.token_for("user_123").await;
    let res = app
        .invalidate(&app.tenant, json!({"externalId": "user_123"}))
        .await;
    assert_eq!(res.status(), 200);
    assert_dead(&app, &old, "token_revoked", "invalidated").await;
    // Numeric external ids too.
    let numeric = app
        .mint(json!({"userId": 77}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let res = app.invalidate(&app.tenant, json!({"externalId": 77})).await;
    assert_eq!(res.status(), 200);
    assert_dead(
        &app,
        numeric["token"].as_str().unwrap(),
        "token_revoked",
        "invalidated",
    )
    .await;
}

#[tokio::test]
async fn another_companys_user_reads_as_unknown() {
    let app = spawn_app().await;
    let other = app.add_tenant("company_other", "agent_other").await;
    let theirs = app.mint_as(&other, "user_123").await;
    let foreign = app
        .invalidate(&app.tenant, json!({"userId": theirs["user"]["id"]}))
        .await;
    let foreign = assert_error(foreign, 404, "not_found", "no such user").await;
    let unknown = app
        .invalidate(&app.tenant, json!({"userId": "nobody"}))
        .await;
    let unknown = assert_error(unknown, 404, "not_found", "no such user").await;
    assert_eq!(foreign, unknown);
    // And their token still works.
    assert_alive(&app, theirs["token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn invalidate_needs_exactly_one_way_to_name_the_user() {
    let app = spawn_app().await;
    let res = app.invalidate(&app.tenant, json!({})).await;
    assert_error(res, 400, "invalid_request", "userId").await;
    let res = app
        .invalidate(&app.tenant, json!({"userId": "a", "externalId": "b"}))
        .await;
    assert_error(res, 400, "invalid_request", "not both").await;
    let res = app
        .post(
            "/rest/v1/auth/invalidate",
            &json!({"keyId": "pk_x", "keySecret": "sk_x", "userId": "a"}),
        )
        .await;
    assert_error(res, 401, "invalid_credentials", "keyId or keySecret").await;
}

#[tokio::test]
async fn revoking_one_token_spares_the_users_others() {
    let app = spawn_app().await;
    let first = app.token_for("user_123").await;
    let second = app.token_for("user_123").await;
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": first})),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["revoked"], true);
    assert_eq!(body["jti"], claims(&first)["jti"]);
    let exp = claims(&first)["exp"].as_i64().unwrap();
    assert_eq!(
        common::wire_time(&body["expiresAt"]),
        time::OffsetDateTime::from_unix_timestamp(exp).unwrap()
    );
    assert_dead(&app, &first, "token_revoked", "revoked").await;
    assert_alive(&app, &second).await;
    // Revoking again is fine.
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": first})),
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn another_companys_token_cannot_be_revoked_and_reads_like_garbage() {
    let app = spawn_app().await;
    let other = app.add_tenant("company_other", "agent_other").await;
    let theirs = app.mint_as(&other, "u").await;
    let token = theirs["token"].as_str().unwrap();
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": token})),
        )
        .await;
    let foreign = assert_error(res, 400, "invalid_request", "token").await;
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": "garbage"})),
        )
        .await;
    let garbage = assert_error(res, 400, "invalid_request", "token").await;
    assert_eq!(foreign, garbage);
    assert_alive(&app, token).await;
}

#[tokio::test]
async fn a_revoked_key_kills_every_token_it_minted() {
    let app = spawn_app().await;
    let token = app.token_for("user_123").await;
    let second_id = performchat::auth::api_key::new_key_id();
    let second_key = {
        let secret = performchat::auth::KeySecret::generate();
        app.db
            .insert_api_key(
                &second_id,
                &app.tenant.company,
                &secret.hash(),
                app.clock.now_ms(),
            )
            .await
            .unwrap();
        app.synced().await;
        common::Tenant {
            key_id: second_id.clone(),
            key_secret: secret.expose().into(),
            ..app.tenant.clone()
        }
    };
    let by_second: Value = app
        .post(
            "/rest/v1/auth/token",
            &app.with_key(&second_key, json!({"userId": "user_123"})),
        )
        .await
        .json()
        .await
        .unwrap();
    app.db
        .revoke_api_key(&app.tenant.key_id, app.clock.now_ms())
        .await
        .unwrap();
    app.synced().await;
    assert_dead(&app, &token, "token_revoked", "API key").await;
    assert_alive(&app, by_second["token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn an_inactive_agent_suspends_its_tokens_until_reactivated() {
    let app = spawn_app().await;
    let token = app.token_for("user_123").await;
    let off = AgentUpdate {
        active: Some(false),
        ..Default::default()
    };
    app.db
        .update_agent("agent_abc", off, app.clock.now_ms())
        .await
        .unwrap();
    app.synced().await;
    assert_dead(&app, &token, "token_revoked", "agent").await;
    let on = AgentUpdate {
        active: Some(true),
        ..Default::default()
    };
    app.db
        .update_agent("agent_abc", on, app.clock.now_ms())
        .await
        .unwrap();
    app.synced().await;
    assert_alive(&app, &token).await;
}

#[tokio::test]
async fn an_inactive_company_suspends_its_tokens_until_reactivated() {
    let app = spawn_app().await;
    let token = app.token_for("user_123").await;
    app.db
        .set_company_active("company_xyz", false, app.clock.now_ms())
        .await
        .unwrap();
    app.synced().await;
    assert_dead(&app, &token, "token_revoked", "company").await;
    // Its key can no longer introspect or mint either.
    let res = app
        .post(
            "/rest/v1/auth/introspect",
            &app.with_key(&app.tenant, json!({"token": token})),
        )
        .await;
    assert_error(res, 403, "company_inactive", "inactive").await;
    app.db
        .set_company_active("company_xyz", true, app.clock.now_ms())
        .await
        .unwrap();
    app.synced().await;
    assert_alive(&app, &token).await;
}

#[tokio::test]
async fn expiry_is_exact_and_says_expired() {
    let app = spawn_app().await;
    let res = app.mint(json!({"userId": "u", "expiresIn": "1m"})).await;
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let exp = claims(&token)["exp"].as_i64().unwrap();
    let wait_to = |target_s: i64| {
        let now_ms = app.clock.now_ms();
        Duration::from_millis((target_s * 1000 - now_ms).max(0) as u64)
    };
    // One second before exp it still verifies...
    app.advance_clock(wait_to(exp - 1)).await;
    assert_alive(&app, &token).await;
    // ...and at exp it does not: no hidden leeway.
    app.advance_clock(wait_to(exp)).await;
    assert_dead(&app, &token, "token_expired", "expired").await;
}

#[tokio::test]
async fn a_configured_leeway_is_honoured() {
    let settings = performchat::config::Settings {
        token_leeway: 30,
        ..Default::default()
    };
    let app = common::spawn_app_with(settings).await;
    let res = app.mint(json!({"userId": "u", "expiresIn": "1m"})).await;
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.advance_clock(Duration::from_secs(75)).await;
    assert_alive(&app, &token).await;
    app.advance_clock(Duration::from_secs(20)).await;
    assert_dead(&app, &token, "token_expired", "expired").await;
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let app = spawn_app().await;
    let good = app.token_for("user_123").await;
    let c = claims(&good);
    let parts: Vec<&str> = good.split('.').collect();
    let signed_header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let with = |field: &str, value: Value| {
        let mut c = c.clone();
        c[field] = value;
        c
    };
    let other_deployment = forge(signed_header, &c, &[42u8; 32]);
    let mut cases = vec![
        ("wrong key (another deployment)", other_deployment),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(with("sub", json!("x")).to_string()),
                parts[2]
            ),
        ),
        (
            "tampered header",
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWS"}"#),
                parts[1],
                parts[2]
            ),
        ),
        ("trailing bytes", format!("{good}AAAA")),
        ("extra segment", format!("{good}.e30")),
        ("no signature", format!("{}.{}.", parts[0], parts[1])),
        (
            "over 8 KiB",
            format!("{}.{}.{}", parts[0], parts[1], "A".repeat(9000)),
        ),
        (
            "string exp",
            forge(
                signed_header,
                &with("exp", json!(c["exp"].to_string())),
                &[0u8; 32],
            ),
        ),
        ("garbage", "abc".into()),
    ];
    for alg in ["none", "None", "NONE", "HS384", "HS512", "RS256"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(&header), parts[1]);
        cases.push((alg, unsigned));
        cases.push((alg, forge(&header, &c, &[0u8; 32])));
    }
    for (name, token) in cases {
        let res = app.me(&token).await;
        assert_eq!(res.status(), 401, "{name}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "token_invalid", "{name}: {body}");
    }
    assert_alive(&app, &good).await;
}

#[tokio::test]
async fn a_token_with_a_string_exp_signed_with_the_real_key_is_refused() {
    let app = spawn_app().await;
    let good = app.token_for("user_123").await;
    let secret = app.db.list_signing_keys().await.unwrap().remove(0).secret;
    let mut c = claims(&good);
    let exp = c["exp"].as_i64().unwrap();
    // Sanity: the harness can sign a token the server accepts.
    assert_alive(&app, &forge(r#"{"alg":"HS256","typ":"JWT"}"#, &c, &secret)).await;
    c["exp"] = json!(exp.to_string());
    let res = app
        .me(&forge(r#"{"alg":"HS256","typ":"JWT"}"#, &c, &secret))
        .await;
    assert_error(res, 401, "token_invalid", "malformed").await;
    c["exp"] = json!(exp);
    c["iat"] = json!(app.clock.now_s() + 3600);
    c["exp"] = json!(app.clock.now_s() + 7200);
    let res = app
        .me(&forge(r#"{"alg":"HS256","typ":"JWT"}"#, &c, &secret))
        .await;
    assert_error(res, 401, "token_invalid", "future").await;
    c["iat"] = json!(app.clock.now_s());
    c["iss"] = json!("someone-else");
    let res = app
        .me(&forge(r#"{"alg":"HS256","typ":"JWT"}"#, &c, &secret))
        .await;
    assert_error(res, 401, "token_invalid", "issuer").await;
}

#[tokio::test]
async fn introspection_reports_only_the_callers_active_tokens() {
    let app = spawn_app().await;
    let token = app.token_for("user_123").await;
    let c = claims(&token);
    let active = app.introspect(&app.tenant, &token).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], c["sub"]);
    assert_eq!(active["exp"], c["exp"]);
    assert_eq!(active["agentId"], "agent_abc");
    assert_eq!(active["companyId"], "company_xyz");

    let other = app.add_tenant("company_other", "agent_other").await;
    assert_eq!(
        app.introspect(&other, &token).await,
        json!({"active": false})
    );
    assert_eq!(
        app.introspect(&app.tenant, "garbage").await,
        json!({"active": false})
    );

    app.invalidate(&app.tenant, json!({"externalId": "user_123"}))
        .await;
    assert_eq!(
        app.introspect(&app.tenant, &token).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn only_the_bearer_endpoint_answers_cors() {
    let app = spawn_app().await;
    let preflight = |path: &str, method: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let res = preflight("/rest/v1/auth/me", "GET").await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let token = app.token_for("u").await;
    let res = app
        .client
        .get(app.url("/rest/v1/auth/me"))
        .header("origin", "https://app.example")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");

    for path in [
        "/rest/v1/auth/token",
        "/rest/v1/auth/invalidate",
        "/rest/v1/auth/revoke",
        "/rest/v1/auth/introspect",
    ] {
        let res = preflight(path, "POST").await.unwrap();
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
        let res = app
            .client
            .post(app.url(path))
            .header("origin", "https://app.example")
            .json(&app.with_key(&app.tenant, json!({"userId": "u", "token": token})))
            .send()
            .await
            .unwrap();
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn verification_fails_closed_when_the_database_is_out_of_reach() {
    let app = spawn_app().await;
    let token = app.token_for("u").await;
    // The change feed can no longer read the log; once its last read is older than the
    // staleness bound (5 s), verification answers 503 rather than trust what it knows.
    app.db.close().await;
    app.clock.advance(Duration::from_secs(6));
    assert_error(app.me(&token).await, 503, "unavailable", "unavailable").await;
}

/// Another subsystem (the chat's sockets) learns of every way a token dies by subscribing to
/// the token state's events: changes made by other processes arrive through the change feed,
/// this instance's own as it applies them.
#[tokio::test]
async fn every_way_a_token_dies_is_announced_to_subscribers() {
    use performchat::token::TokenEvent;
    let app = spawn_app().await;
    let minted = app.mint_ok("u1").await;
    let user_id = minted["user"]["id"].as_str().unwrap().to_owned();
    let token = minted["token"].as_str().unwrap().to_owned();
    let mut events = app.state.tokens.subscribe();
    // The operator's CLI, another process, off this test's runtime (the server's).
    let url = app.test_db.url.clone();
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::cli(&url, &args)
        })
    };
    let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let company = app.tenant.company.clone();

    run(args(&format!(
        "user invalidate --company {company} --user {user_id}"
    )))
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        TokenEvent::UserInvalidated {
            user_id: user_id.clone(),
            version: 1
        }
    );
    // This instance's own change, announced before its answer.
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": token})),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        events.try_recv().unwrap(),
        TokenEvent::TokenRevoked {
            jti: claims(&token)["jti"].as_str().unwrap().to_owned()
        }
    );
    run(args(&format!(
        "agent update {} --active false",
        app.tenant.agent
    )))
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        TokenEvent::AgentActive {
            agent_id: app.tenant.agent.clone(),
            active: false
        }
    );
    run(args(&format!("company update {company} --active false")))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        TokenEvent::CompanyActive {
            company_id: company.clone(),
            active: false
        }
    );
    run(args(&format!("key revoke {}", app.tenant.key_id)))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        TokenEvent::KeyRevoked {
            key_id: app.tenant.key_id.clone()
        }
    );
    run(args("signing-key rotate --retire-old-in 1h"))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        TokenEvent::SigningKeysChanged
    );
    // Nothing announced twice when the feed re-reads this instance's own revocation.
    app.synced().await;
    assert!(events.try_recv().is_err());
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<performchat::token::TokenEvent>,
) -> performchat::token::TokenEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .unwrap()
}
