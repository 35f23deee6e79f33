//! Token verification on the hot path (`token::verify`: signature, claims, in-memory
//! revocation state), against a real SQLite database that it must not touch.
//! Run: `cargo bench --bench verify`.

use criterion::{Criterion, criterion_group, criterion_main};
use performchat::app::App;
use performchat::auth::{ExpiresIn, ExternalUserId, KeySecret, Scope};
use performchat::clock::Clock;
use performchat::config::Settings;
use performchat::db::Db;
use performchat::token::{self, Credentials};
use serde_json::json;

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (state, token) = rt.block_on(async {
        let db = Db::connect(&url).await.unwrap();
        let clock = Clock::default();
        let now = clock.now_ms();
        db.insert_company("company_xyz", "Acme", now).await.unwrap();
        db.insert_agent("agent_abc", "company_xyz", "Support Agent", true, true, now)
            .await
            .unwrap();
        let secret = KeySecret::generate();
        let key_id = performchat::auth::api_key::new_key_id();
        db.insert_api_key(&key_id, "company_xyz", &secret.hash(), now)
            .await
            .unwrap();
        let app = App::build(db, Settings::default(), clock).await.unwrap();
        let state = app.state().clone();
        // The background tasks run for as long as the runtime does.
        std::mem::forget(app);
        let creds = Credentials {
            key_id: &key_id,
            secret: &secret,
            client: None,
        };
        let caller = token::authenticate(&state, creds, Scope::Mint).unwrap();
        // Some revocation state to look through, as a long-running server has.
        for i in 0..1000 {
            let user =
                ExternalUserId::from_json("userId", Some(&json!(format!("old_{i}")))).unwrap();
            let minted = token::mint(&state, &caller, &user, None, Some(ExpiresIn::DEFAULT))
                .await
                .unwrap();
            token::revoke(&state, &caller, &minted.token).await.unwrap();
        }
        let user = ExternalUserId::from_json("userId", Some(&json!("user_123"))).unwrap();
        let token = token::mint(&state, &caller, &user, None, Some(ExpiresIn::DEFAULT))
            .await
            .unwrap()
            .token;
        (state, token)
    });
    // Runtime threads keep the change feed alive while the benchmark runs.
    let _guard = rt.enter();
    assert!(token::verify(&state, &token).is_ok());
    c.bench_function("verify a valid token", |b| {
        b.iter(|| token::verify(&state, std::hint::black_box(&token)).unwrap())
    });
    let forged = format!("{}x", &token[..token.len() - 1]);
    c.bench_function("refuse a forged signature", |b| {
        b.iter(|| token::verify(&state, std::hint::black_box(&forged)).unwrap_err())
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
