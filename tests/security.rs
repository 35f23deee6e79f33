//! Security rules through the real server: key checksums, scopes, agent lists and lifetimes
//! per key, key rolling, rate limits (on and off), signing-key rotation, CORS origins.

mod common;

use std::time::Duration;

use common::{Tenant, TestApp, assert_error, claims, cli_json, forge, spawn_app, spawn_app_with};
use performchat::auth::KeySecret;
use performchat::auth::api_key::new_key_id;
use performchat::config::Settings;
use performchat::db::KeyPolicy;
use serde_json::{Value, json};

/// A key of the main tenant's company with the given policy.
async fn key_with(app: &TestApp, policy: KeyPolicy) -> Tenant {
    let secret = KeySecret::generate();
    let id = new_key_id();
    app.db
        .insert_api_key_with(
            &id,
            &app.tenant.company,
            &secret.hash(),
            &policy,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    app.synced().await;
    Tenant {
        key_id: id,
        key_secret: secret.expose().into(),
        ..app.tenant.clone()
    }
}

async fn mint_with(app: &TestApp, t: &Tenant, body: Value) -> reqwest::Response {
    app.post("/rest/v1/auth/token", &app.with_key(t, body))
        .await
}

#[tokio::test]
async fn a_mistyped_secret_is_refused_like_any_wrong_one() {
    let app = spawn_app().await;
    let mut typo = app.tenant.key_secret.clone().into_bytes();
    typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
    let typo = Tenant {
        key_secret: String::from_utf8(typo).unwrap(),
        ..app.tenant.clone()
    };
    let res = mint_with(&app, &typo, json!({"userId": "u"})).await;
    let a = assert_error(res, 401, "invalid_credentials", "keyId or keySecret").await;
    let wrong = Tenant {
        key_secret: KeySecret::generate().expose().into(),
        ..app.tenant.clone()
    };
    let res = mint_with(&app, &wrong, json!({"userId": "u"})).await;
    let b = assert_error(res, 401, "invalid_credentials", "keyId or keySecret").await;
    assert_eq!(a, b);
    // Generated pairs carry the recognisable shape.
    assert!(app.tenant.key_id.starts_with("pk_") && app.tenant.key_id.len() == 33);
    assert!(app.tenant.key_secret.starts_with("sk_") && app.tenant.key_secret.len() == 52);
}

#[tokio::test]
async fn scopes_separate_minting_from_managing() {
    let app = spawn_app().await;
    let minter = key_with(
        &app,
        KeyPolicy {
            scopes: "mint".into(),
            ..Default::default()
        },
    )
    .await;
    let manager = key_with(
        &app,
        KeyPolicy {
            scopes: "manage".into(),
            ..Default::default()
        },
    )
    .await;

    let minted: Value = mint_with(&app, &minter, json!({"userId": "u"}))
        .await
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap();
    for (path, body) in [
        ("/rest/v1/auth/invalidate", json!({"externalId": "u"})),
        ("/rest/v1/auth/revoke", json!({"token": token})),
        ("/rest/v1/auth/introspect", json!({"token": token})),
    ] {
        let res = app.post(path, &app.with_key(&minter, body.clone())).await;
        assert_error(res, 403, "insufficient_scope", "manage").await;
        let res = app.post(path, &app.with_key(&manager, body)).await;
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = mint_with(&app, &manager, json!({"userId": "u"})).await;
    assert_error(res, 403, "insufficient_scope", "mint").await;
}

#[tokio::test]
async fn a_key_may_be_limited_to_some_agents_and_a_shorter_lifetime() {
    let app = spawn_app().await;
    let now = app.clock.now_ms();
    app.db
        .insert_agent("agent_sales", "company_xyz", "Sales", true, false, now)
        .await
        .unwrap();
    let limited = key_with(
        &app,
        KeyPolicy {
            allowed_agents: Some("agent_sales".into()),
            max_expires_in: Some(3600),
            ..Default::default()
        },
    )
    .await;
    let res = mint_with(
        &app,
        &limited,
        json!({"userId": "u", "agentId": "agent_sales"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let c = claims(body["token"].as_str().unwrap());
    // Without expiresIn, the key's maximum (below the 24h default) applies.
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );

    let res = mint_with(
        &app,
        &limited,
        json!({"userId": "u", "agentId": "agent_abc"}),
    )
    .await;
    assert_error(res, 403, "agent_not_allowed", "agent_abc").await;
    // The company default (agent_abc) is not on the list either.
    let res = mint_with(&app, &limited, json!({"userId": "u"})).await;
    assert_error(res, 403, "agent_not_allowed", "agent_abc").await;
    let res = mint_with(
        &app,
        &limited,
        json!({"userId": "u", "agentId": "agent_sales", "expiresIn": "2h"}),
    )
    .await;
    assert_error(res, 400, "invalid_request", "maximum of 3600 seconds").await;
}

#[tokio::test]
async fn a_rolled_key_accepts_its_old_secret_until_the_set_time() {
    let app = spawn_app().await;
    let new_secret = KeySecret::generate();
    let until = app.clock.now_ms() + 60_000;
    app.db
        .roll_api_key(
            &app.tenant.key_id,
            &new_secret.hash(),
            until,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    app.synced().await;
    let rolled = Tenant {
        key_secret: new_secret.expose().into(),
        ..app.tenant.clone()
    };
    assert_eq!(
        mint_with(&app, &rolled, json!({"userId": "u"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        mint_with(&app, &app.tenant, json!({"userId": "u"}))
            .await
            .status(),
        200
    );
    app.advance_clock(Duration::from_secs(61)).await;
    let res = mint_with(&app, &app.tenant, json!({"userId": "u"})).await;
    assert_error(res, 401, "invalid_credentials", "keyId or keySecret").await;
    assert_eq!(
        mint_with(&app, &rolled, json!({"userId": "u"}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn minting_is_rate_limited_per_key_when_switched_on() {
    let settings = Settings {
        mint_rate: 2,
        mint_burst: 2,
        ..Default::default()
    };
    let app = spawn_app_with(settings).await;
    let first = app.mint(json!({"userId": "u"})).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(app.mint(json!({"userId": "u"})).await.status(), 200);
    let res = app.mint(json!({"userId": "u"})).await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    assert_error(res, 429, "rate_limited", "too many tokens").await;
    // Another key of the same company is not affected.
    let other = key_with(&app, KeyPolicy::default()).await;
    assert_eq!(
        mint_with(&app, &other, json!({"userId": "u"}))
            .await
            .status(),
        200
    );

    let off = spawn_app_with(Settings {
        mint_rate: 0,
        ..Default::default()
    })
    .await;
    for _ in 0..20 {
        let res = off.mint(json!({"userId": "u"})).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn repeated_failed_authentications_block_the_client() {
    let settings = Settings {
        auth_failures_per_minute: 3,
        ..Default::default()
    };
    let app = spawn_app_with(settings).await;
    let wrong = Tenant {
        key_secret: KeySecret::generate().expose().into(),
        ..app.tenant.clone()
    };
    for _ in 0..3 {
        let res = mint_with(&app, &wrong, json!({"userId": "u"})).await;
        assert_eq!(res.status(), 401);
    }
    let res = mint_with(&app, &wrong, json!({"userId": "u"})).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "rate_limited", "failed authentications").await;
    // The whole client is blocked for the window, good credentials included.
    let res = app.mint(json!({"userId": "u"})).await;
    assert_error(res, 429, "rate_limited", "failed authentications").await;

    let off = spawn_app_with(Settings {
        auth_failures_per_minute: 0,
        ..Default::default()
    })
    .await;
    let wrong = Tenant {
        key_secret: KeySecret::generate().expose().into(),
        ..off.tenant.clone()
    };
    for _ in 0..40 {
        assert_eq!(
            mint_with(&off, &wrong, json!({"userId": "u"}))
                .await
                .status(),
            401
        );
    }
    assert_eq!(off.mint(json!({"userId": "u"})).await.status(), 200);
}

/// The rate-limit state is cleaned by the server itself (every minute of its clock): an
/// hour after their last failure, blocked clients and keyIds are forgotten.
#[tokio::test]
async fn the_server_forgets_old_blocks_by_itself() {
    let app = spawn_app_with(Settings {
        auth_failures_per_minute: 3,
        ..Default::default()
    })
    .await;
    let wrong = Tenant {
        key_secret: KeySecret::generate().expose().into(),
        ..app.tenant.clone()
    };
    for _ in 0..5 {
        mint_with(&app, &wrong, json!({"userId": "u"})).await;
    }
    let blocked = app.state.limits.tracked();
    assert!(blocked >= 3, "a client and a keyId are tracked: {blocked}");
    app.advance_clock(Duration::from_secs(2 * 3600)).await;
    let mut left = blocked;
    for _ in 0..50 {
        left = app.state.limits.tracked();
        if left <= blocked - 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left <= blocked - 2,
        "the two blocks are forgotten: {left} of {blocked} left"
    );
    assert_eq!(app.mint(json!({"userId": "u"})).await.status(), 200);
}

#[tokio::test]
async fn a_daily_quota_of_new_users_stops_a_flood_but_not_known_users() {
    let settings = Settings {
        new_users_per_key_per_day: 2,
        ..Default::default()
    };
    let app = spawn_app_with(settings).await;
    app.mint_ok("a").await;
    app.mint_ok("b").await;
    let res = app.mint(json!({"userId": "c"})).await;
    assert_error(res, 429, "rate_limited", "daily quota of new users").await;
    app.mint_ok("a").await;
}

#[tokio::test]
async fn a_rotated_signing_key_signs_new_tokens_while_old_ones_verify_until_retired() {
    let app = spawn_app().await;
    let old = app.token_for("u").await;
    let retire_at = app.clock.now_ms() + 3_600_000;
    app.db
        .rotate_signing_key("sig_test2", &[9u8; 32], retire_at, app.clock.now_ms())
        .await
        .unwrap();
    app.synced().await;
    let new = app.token_for("u").await;
    assert!(
        new.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
        "the header stays as documented"
    );
    assert_eq!(claims(&new)["skid"], "sig_test2");
    assert_ne!(claims(&old)["skid"], "sig_test2");
    assert_eq!(app.me(&old).await.status(), 200);
    assert_eq!(app.me(&new).await.status(), 200);
}

/// Operators rotate because a signing secret leaked: from the retirement time on, a token
/// forged with the old secret is refused whatever its `exp`, before the clean-up erases the
/// secret and after; the clean-up itself runs in the server.
#[tokio::test]
async fn a_token_forged_with_a_retired_signing_key_is_refused_from_its_retirement_on() {
    let app = spawn_app().await;
    let keys = app.db.list_signing_keys().await.unwrap();
    let leaked = keys[0].clone();
    let mut forged_claims = claims(&app.token_for("victim").await);
    forged_claims["exp"] = json!(app.clock.now_s() + 365 * 86_400);
    forged_claims["jti"] = json!("forged-after-the-leak");
    let forged = forge(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &forged_claims,
        &leaked.secret,
    );
    assert_eq!(
        app.me(&forged).await.status(),
        200,
        "the leaked key still verifies"
    );

    // The operator's command, through the real binary, while the server runs (off this
    // test's single-threaded runtime, which is the server's).
    let url = app.test_db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli_json(&url, &["signing-key", "rotate", "--retire-old-in", "1h"])
    })
    .await
    .unwrap();
    let new_id = out["signingKeyId"].as_str().unwrap().to_owned();
    app.synced().await;
    assert_eq!(
        app.me(&forged).await.status(),
        200,
        "verifies until retirement"
    );

    app.advance_clock(Duration::from_secs(3601)).await;
    let refused = assert_error(
        app.me(&forged).await,
        401,
        "token_revoked",
        "signing key has been retired",
    )
    .await;
    assert_eq!(refused["error"]["code"], "token_revoked");
    let fresh = app.token_for("victim").await;
    assert_eq!(claims(&fresh)["skid"], new_id.as_str());
    assert_eq!(
        app.me(&fresh).await.status(),
        200,
        "a new token, signed by the new key, works"
    );

    // The periodic clean-up (every ten minutes of the server's clock) erases the secret.
    app.advance_clock(Duration::from_secs(601)).await;
    let mut erased = false;
    for _ in 0..100 {
        let keys = app.db.list_signing_keys().await.unwrap();
        if keys.iter().any(|k| k.id == leaked.id && k.is_erased()) {
            erased = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(erased, "the server erased the retired secret by itself");
    app.synced().await;
    assert_error(
        app.me(&forged).await,
        401,
        "token_revoked",
        "signing key has been retired",
    )
    .await;
    assert_eq!(app.me(&fresh).await.status(), 200);
    let listed = cli_json(&app.test_db.url, &["signing-key", "list"]);
    let states: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retired, secret erased", "signing"]);
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let settings = Settings {
        cors_origins: "https://app.example, https://admin.example".into(),
        ..Default::default()
    };
    let app = spawn_app_with(settings).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/rest/v1/auth/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let res = preflight("https://admin.example").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://admin.example"
    );
    let res = preflight("https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn operators_create_restricted_keys_roll_them_and_rotate_signing_keys() {
    let db = common::TestDb::new().await;
    let url = &db.url;
    common::create_acme(url);
    let key = common::cli_json(
        url,
        &[
            "key",
            "create",
            "--company",
            "company_acme",
            "--scopes",
            "mint",
            "--allowed-agents",
            "agent_a,agent_b",
            "--max-expires-in",
            "1h",
        ],
    );
    assert_eq!(key["scopes"], "mint");
    assert_eq!(key["allowedAgents"], "agent_a,agent_b");
    assert_eq!(key["maxExpiresIn"], 3600);
    let out = common::performchat(url)
        .args([
            "key",
            "create",
            "--company",
            "company_acme",
            "--scopes",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope"));

    let rolled = common::cli_json(
        url,
        &[
            "key",
            "roll",
            key["keyId"].as_str().unwrap(),
            "--expire-old-in",
            "1h",
        ],
    );
    assert_ne!(rolled["keySecret"], key["keySecret"]);
    assert!(rolled["previousSecretExpiresAt"].is_string());

    // A server's first start makes the first signing key.
    drop(common::Server::start(url, &[]));
    let rotated = common::cli_json(url, &["signing-key", "rotate"]);
    assert!(
        rotated["signingKeyId"]
            .as_str()
            .unwrap()
            .starts_with("sig_")
    );
    let keys = common::cli_json(url, &["signing-key", "list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0]["retireAt"].is_string());
    assert!(keys[1]["retireAt"].is_null());
    let text = common::cli(url, &["signing-key", "list"]);
    assert!(!text.contains("secret"));
}
