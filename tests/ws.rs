//! The chat socket through the real server and a real WebSocket client: every frame of
//! docs/chat-protocol.md, and every close code.

mod common;

use std::time::Duration;

use common::{
    ChatClient as Client, TestApp, assert_error, claims, forge, spawn_app, spawn_app_with,
};
use futures_util::{SinkExt, StreamExt};
use performchat::config::Settings;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A token for user u1 that lives `expires_in`.
async fn token_lasting(app: &TestApp, expires_in: &str) -> String {
    let res = app
        .mint(json!({"userId": "u1", "expiresIn": expires_in}))
        .await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn open(c: &mut Client) -> String {
    c.send(json!({"type": "open", "id": "o"})).await;
    let conv = c.next().await;
    assert_eq!(conv["type"], "conversation", "{conv}");
    assert_eq!(conv["id"], "o");
    conv["conversation"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_socket_opens_sends_hears_and_catches_up() {
    let app = spawn_app().await;
    let minted = app.mint_ok("u1").await;
    let token = minted["token"].as_str().unwrap();
    let (mut a, ready) = Client::ready(&app.ws_url(), token).await;
    assert_eq!(ready["id"], 1);
    assert_eq!(ready["user"]["id"], minted["user"]["id"]);
    assert_eq!(ready["user"]["externalId"], "u1");
    assert_eq!(ready["agent"]["name"], "Support Agent");
    assert!(ready["expiresAt"].is_string());
    let (mut b, _) = Client::ready(&app.ws_url(), token).await; // a second tab
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("performchat_chat_sockets 2"),
        "two sockets counted: {metrics}"
    );
    let conv = open(&mut a).await;

    a.send(json!({"type": "send", "id": 7, "conversationId": conv, "clientMessageId": "m1", "text": "hello"}))
        .await;
    let ack = a.next().await;
    assert_eq!(ack["type"], "ack", "the sender's ack comes first: {ack}");
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["duplicate"], false);
    assert_eq!(ack["message"]["seq"], 1);
    let echo = a.next().await;
    assert_eq!(echo["type"], "message");
    assert_eq!(echo["conversationId"], conv);
    assert_eq!(echo["message"], ack["message"]);
    let other_tab = b.next().await;
    assert_eq!(
        other_tab["message"], ack["message"],
        "every socket of the user"
    );

    a.send(json!({"type": "send", "id": 8, "conversationId": conv, "clientMessageId": "m1", "text": "hello"}))
        .await;
    let dup = a.next().await;
    assert_eq!(dup["type"], "ack");
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["message"]["id"], ack["message"]["id"]);

    // The company answers over REST: the user's sockets hear it.
    let res = app
        .client
        .post(app.url(&format!("/rest/v1/agent/conversations/{conv}/messages")))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .json(&json!({"text": "Hi! How can I help?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let reply = a.next().await;
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["message"]["sender"]["kind"], "agent");
    assert_eq!(reply["message"]["seq"], 2);
    assert_eq!(b.next().await["message"]["seq"], 2, "and the other tab");

    // A reconnecting client catches up with history after the last seq it saw.
    a.send(json!({"type": "history", "id": "h", "conversationId": conv, "after": 1}))
        .await;
    let history = a.next().await;
    assert_eq!(history["type"], "history");
    assert_eq!(history["id"], "h");
    assert_eq!(history["conversationId"], conv);
    assert_eq!(history["hasMore"], false);
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(history["messages"][0]["seq"], 2);

    a.send(json!({"type": "read", "conversationId": conv, "seq": 2}))
        .await;
    a.send(json!({"type": "typing", "conversationId": conv, "state": "start"}))
        .await;
    a.send(json!({"type": "ping", "id": 9})).await;
    assert_eq!(
        a.next().await,
        json!({"type": "pong", "id": 9}),
        "read and typing get no reply"
    );

    let res = app
        .client
        .post(app.url(&format!("/rest/v1/agent/conversations/{conv}/close")))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        a.next().await,
        json!({"type": "conversation_closed", "conversationId": conv})
    );
    a.send(json!({"type": "send", "id": 10, "conversationId": conv, "clientMessageId": "m2", "text": "hey"}))
        .await;
    let refused = a.next().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["id"], 10);
    assert_eq!(refused["code"], "conversation_closed");
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let app = spawn_app_with(Settings {
        chat_send_rate: 1,
        chat_send_burst: 1,
        ..Default::default()
    })
    .await;
    let token = app.token_for("u1").await;
    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    let conv = open(&mut c).await;
    let other = app.token_for("u2").await;
    let (mut o, _) = Client::ready(&app.ws_url(), &other).await;
    let theirs = open(&mut o).await;
    for (frame, code) in [
        (json!({"type": "dance", "id": 1}), "invalid_request"),
        (
            json!({"type": "send", "id": 2, "conversationId": conv, "clientMessageId": "a b", "text": "x"}),
            "invalid_request",
        ),
        (
            json!({"type": "send", "id": 3, "conversationId": conv, "clientMessageId": "a", "text": ""}),
            "invalid_request",
        ),
        (
            json!({"type": "send", "id": 4, "conversationId": theirs, "clientMessageId": "a", "text": "x"}),
            "not_found",
        ),
        (
            json!({"type": "history", "id": 5, "conversationId": conv, "before": 1, "after": 1}),
            "invalid_request",
        ),
        (
            json!({"type": "auth", "id": 6, "token": token}),
            "invalid_request",
        ),
    ] {
        c.send(frame.clone()).await;
        let e = c.next().await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["code"], code, "{frame}: {e}");
        assert_eq!(e["id"], frame["id"]);
        assert!(e["message"].as_str().unwrap().len() > 5);
    }
    c.ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(c.next().await["code"], "invalid_request");

    c.send(json!({"type": "send", "id": 20, "conversationId": conv, "clientMessageId": "r1", "text": "x"})).await;
    assert_eq!(c.next().await["type"], "ack");
    assert_eq!(c.next().await["type"], "message");
    c.send(json!({"type": "send", "id": 21, "conversationId": conv, "clientMessageId": "r2", "text": "x"})).await;
    let limited = c.next().await;
    assert_eq!(limited["code"], "rate_limited");
    assert_eq!(limited["retryAfter"], 1);
    c.send(json!({"type": "ping", "id": 22})).await;
    assert_eq!(c.next().await["type"], "pong", "still open");
}

#[tokio::test]
async fn refresh_swaps_the_token_in_place_only_for_the_same_user_agent_and_company() {
    let app = spawn_app().await;
    let token = app.token_for("u1").await;
    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    let later = token_lasting(&app, "2h").await;
    c.send(json!({"type": "refresh", "id": 1, "token": later}))
        .await;
    let refreshed = c.next().await;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    assert_eq!(refreshed["id"], 1);
    let other_user = app.token_for("u2").await;
    c.send(json!({"type": "refresh", "id": 2, "token": other_user}))
        .await;
    let e = c.next().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("refresh_mismatch"))
    );
    c.send(json!({"type": "refresh", "id": 3, "token": "garbage"}))
        .await;
    assert_eq!(c.next().await["code"], "token_invalid");
    // The first token is revoked: the socket lives on the refreshed one.
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": token})),
        )
        .await;
    assert_eq!(res.status(), 200);
    c.send(json!({"type": "ping", "id": 4})).await;
    assert_eq!(c.next().await["type"], "pong");
}

#[tokio::test]
async fn every_way_a_token_dies_closes_its_sockets_with_its_code() {
    let app = spawn_app().await;
    // 4002: the user invalidated.
    let minted = app.mint_ok("u1").await;
    let (mut c, _) = Client::ready(&app.ws_url(), minted["token"].as_str().unwrap()).await;
    let res = app
        .invalidate(&app.tenant, json!({"userId": minted["user"]["id"]}))
        .await;
    assert_eq!(res.status(), 200);
    // The socket's close frame left before the HTTP answer did.
    let closes_4002 = || {
        app.state
            .render_metrics()
            .lines()
            .find(|l| l.starts_with("performchat_chat_socket_closes_total{code=\"4002\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(closes_4002().as_deref(), Some("1"));
    assert_eq!(c.closed().await, (4002, "token_revoked".into()));

    // 4002: this token revoked; another socket of the user lives.
    let t1 = app.token_for("u2").await;
    let t2 = app.token_for("u2").await;
    let (mut c1, _) = Client::ready(&app.ws_url(), &t1).await;
    let (mut c2, _) = Client::ready(&app.ws_url(), &t2).await;
    let res = app
        .post(
            "/rest/v1/auth/revoke",
            &app.with_key(&app.tenant, json!({"token": t1})),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(closes_4002().as_deref(), Some("2"));
    assert_eq!(c1.closed().await.0, 4002);
    c2.send(json!({"type": "ping"})).await;
    assert_eq!(c2.next().await["type"], "pong");

    // 4003: the agent deactivated.
    let (mut c3, _) = Client::ready(&app.ws_url(), &app.token_for("u3").await).await;
    app.db
        .update_agent(
            &app.tenant.agent,
            performchat::db::AgentUpdate {
                active: Some(false),
                ..Default::default()
            },
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    app.state.tokens.wake();
    assert_eq!(c3.closed().await, (4003, "access_revoked".into()));
    assert_eq!(c2.closed().await.0, 4003);
}

#[tokio::test]
async fn a_revoked_key_or_an_inactive_company_closes_with_4003_and_a_retired_signing_key_with_4002()
{
    let app = spawn_app().await;
    let (mut by_key, _) = Client::ready(&app.ws_url(), &app.token_for("u1").await).await;
    app.db
        .revoke_api_key(&app.tenant.key_id, app.clock.now_ms())
        .await
        .unwrap();
    app.state.tokens.wake();
    assert_eq!(by_key.closed().await.0, 4003);

    let app = spawn_app().await;
    let (mut by_company, _) = Client::ready(&app.ws_url(), &app.token_for("u1").await).await;
    app.db
        .set_company_active(&app.tenant.company, false, app.clock.now_ms())
        .await
        .unwrap();
    app.state.tokens.wake();
    assert_eq!(by_company.closed().await.0, 4003);

    let app = spawn_app().await;
    let (mut old_key, _) = Client::ready(&app.ws_url(), &app.token_for("u1").await).await;
    let now = app.clock.now_ms();
    app.db
        .rotate_signing_key("sig_2", &[5u8; 32], now + 1000, now)
        .await
        .unwrap();
    app.synced().await;
    old_key.send(json!({"type": "ping"})).await;
    assert_eq!(
        old_key.next().await["type"],
        "pong",
        "verifies until retirement"
    );
    app.advance_clock(Duration::from_secs(2)).await;
    app.state.chat.hub.poke_all();
    assert_eq!(old_key.closed().await.0, 4002);
}

#[tokio::test]
async fn a_token_warns_before_it_expires_and_closes_with_4001_unless_refreshed() {
    let app = spawn_app().await;
    let token = token_lasting(&app, "10m").await;
    let exp = claims(&token)["exp"].as_i64().unwrap();
    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    // The socket's own timer fires on the real clock; the test moves the server's clock and
    // pokes the socket as that timer would.
    app.advance_clock(Duration::from_secs(9 * 60 + 1)).await;
    app.state.chat.hub.poke_all();
    let expiring = c.next().await;
    assert_eq!(expiring["type"], "expiring");
    assert_eq!(expiring["expiresAt"], performchat::clock::rfc3339_s(exp));
    app.advance_clock(Duration::from_secs(60)).await;
    app.state.chat.hub.poke_all();
    assert_eq!(c.closed().await, (4001, "token_expired".into()));
}

#[tokio::test]
async fn sockets_that_never_authenticate_properly_are_closed() {
    let app = spawn_app().await;
    // A frame before auth that is not one.
    let mut c = Client::connect(&app.ws_url()).await;
    c.send(json!({"type": "open"})).await;
    assert_eq!(c.closed().await, (4008, "protocol_error".into()));
    // A forged token.
    let mut c = Client::connect(&app.ws_url()).await;
    let mut forged = claims(&app.token_for("u1").await);
    forged["sub"] = json!("someone_else");
    c.send(json!({"type": "auth", "token": forge(r#"{"alg":"HS256","typ":"JWT"}"#, &forged, b"guess")})).await;
    assert_eq!(c.closed().await, (4004, "token_invalid".into()));
    // An expired token.
    let token = app.token_for("u1").await;
    app.advance_clock(Duration::from_secs(2 * 3600)).await;
    let mut c = Client::connect(&app.ws_url()).await;
    c.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(c.closed().await.0, 4001);
    // Silence: no auth within 10 s.
    let mut c = Client::connect(&app.ws_url()).await;
    assert_eq!(c.closed_within(Duration::from_secs(12)).await.0, 4008);
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_with_1009_and_shutdown_with_1001() {
    let app = spawn_app().await;
    let token = app.token_for("u1").await;
    let (mut big, _) = Client::ready(&app.ws_url(), &token).await;
    let _ = big
        .ws
        .send(Message::text(format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(70_000)
        )))
        .await;
    assert_eq!(big.closed().await.0, u16::from(CloseCode::Size));

    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    app.shut_down();
    assert_eq!(c.closed().await, (1001, "going_away".into()));
}

#[tokio::test]
async fn the_socket_endpoint_refuses_plain_http() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/rest/v1/chat/ws"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
}

#[tokio::test]
async fn a_stale_verification_state_closes_sockets_with_4013() {
    // The change log is read once a minute here, so that the test decides when it is stale.
    let app = spawn_app_with(Settings {
        change_poll_ms: 60_000,
        ..Default::default()
    })
    .await;
    let (mut c, _) = Client::ready(&app.ws_url(), &app.token_for("u1").await).await;
    // Past --max-staleness (5 s) without reading the log, as when the database is unreachable.
    app.clock.advance(Duration::from_secs(6));
    app.state.chat.hub.poke_all();
    assert_eq!(c.closed().await, (4013, "unavailable".into()));
}

/// `performchat user erase`: the user's conversations and messages go, their sockets close,
/// their tokens stay refused (also after a restart), the audit trail keeps only that it
/// happened, and minting again for their id makes a new user.
#[tokio::test]
async fn an_erased_user_loses_their_conversations_tokens_and_sockets() {
    let app = spawn_app().await;
    let minted = app.mint_ok("leaving").await;
    let token = minted["token"].as_str().unwrap().to_owned();
    let old_id = minted["user"]["id"].as_str().unwrap().to_owned();
    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    let conv = open(&mut c).await;
    c.send(json!({"type": "send", "id": 1, "conversationId": conv, "clientMessageId": "m1", "text": "my address is…"}))
        .await;
    assert_eq!(c.next().await["type"], "ack");

    let url = app.test_db.url.clone();
    let company = app.tenant.company.clone();
    let out = tokio::task::spawn_blocking(move || {
        common::cli_json(
            &url,
            &[
                "user",
                "erase",
                "--company",
                &company,
                "--external-id",
                "leaving",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out["erased"], true);
    assert_eq!(out["user"]["id"], old_id.as_str());
    assert_eq!(c.closed().await, (4002, "token_revoked".into()));
    assert_error(app.me(&token).await, 401, "token_revoked", "erased").await;
    let res = app
        .client
        .get(app.url(&format!("/rest/v1/agent/conversations/{conv}/messages")))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "the conversation is gone");
    let events = app
        .db
        .list_audit_events(&performchat::db::AuditQuery {
            company_id: &app.tenant.company,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let erased: Vec<_> = events.iter().filter(|e| e.kind == "user.erased").collect();
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0].user_id.as_deref(), Some(old_id.as_str()));

    let again = app.mint_ok("leaving").await;
    assert_ne!(again["user"]["id"], old_id.as_str(), "a new user");
    let (mut fresh, _) = Client::ready(&app.ws_url(), again["token"].as_str().unwrap()).await;
    fresh.send(json!({"type": "open", "id": "o"})).await;
    let opened = fresh.next().await;
    assert_ne!(opened["conversation"]["id"], conv.as_str());
    assert_eq!(opened["messages"], json!([]));

    // A server starting on this database refuses the old token too.
    let db = performchat::db::Db::connect(&app.test_db.url)
        .await
        .unwrap();
    let restarted = performchat::app::App::build(db, Settings::default(), Default::default())
        .await
        .unwrap();
    let refused = performchat::token::verify(restarted.state(), &token).unwrap_err();
    assert_eq!(refused.code(), "token_revoked");
    restarted.stop().await;
}

/// A socket that answers no ping for `--chat-idle-timeout` is dropped; one whose client
/// answers (as browsers do by themselves) stays.
#[tokio::test]
async fn a_socket_that_answers_no_ping_is_dropped_and_one_that_does_stays() {
    let app = spawn_app_with(Settings {
        chat_ping_interval: 1,
        chat_idle_timeout: 2,
        ..Default::default()
    })
    .await;
    let token = app.token_for("u1").await;
    let (mut silent, _) = Client::ready(&app.ws_url(), &token).await;
    let (mut lively, _) = Client::ready(&app.ws_url(), &token).await;
    // The lively client reads (tungstenite answers each ping with a pong as it reads).
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        if let Ok(Some(Ok(Message::Ping(_)))) =
            tokio::time::timeout(Duration::from_millis(200), lively.ws.next()).await
        {
            pings += 1;
        }
    }
    assert!(pings >= 2, "{pings} pings in 3.5 s");
    lively.send(json!({"type": "ping", "id": "still"})).await;
    assert_eq!(lively.next().await, json!({"type": "pong", "id": "still"}));
    // The silent one read nothing for 3.5 s: the server has dropped it (its pings queued
    // before the end, then the end, without a close code).
    let ended = async {
        loop {
            match silent.ws.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), ended)
        .await
        .expect("the silent socket was dropped");
}

/// A socket that does not read what it is sent is closed with 4009 once 256 frames wait for
/// it, and the sender is not slowed down.
#[tokio::test]
async fn a_socket_too_slow_to_read_its_pushes_is_closed_with_4009() {
    let app = spawn_app().await;
    let token = app.token_for("u1").await;
    let (mut slow, _) = Client::ready(&app.ws_url(), &token).await;
    slow.send(json!({"type": "open", "id": "o"})).await;
    let conversation = slow.next().await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Long replies fill the TCP buffers first, then the socket's queue.
    let path = format!("/rest/v1/agent/conversations/{conversation}/messages");
    let text = "x".repeat(4000);
    let mut sent = 0;
    while !app
        .state
        .render_metrics()
        .contains("chat_socket_closes_total{code=\"4009\"}")
    {
        assert!(sent < 20_000, "no 4009 after {sent} replies");
        let res = app
            .client
            .post(app.url(&path))
            .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
            .json(&json!({"text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        sent += 1;
    }
    // Everything written before the close is still readable; the close code comes last.
    assert_eq!(slow.closed_within(Duration::from_secs(30)).await.0, 4009);
}

/// The company side says its agent is typing; the user's sockets hear it. Bad states and
/// other companies' conversations are refused.
#[tokio::test]
async fn the_agent_typing_reaches_the_users_sockets() {
    let app = spawn_app().await;
    let token = app.token_for("u1").await;
    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    let conversation = open(&mut c).await;
    let typing = |body: Value| {
        app.client
            .post(app.url(&format!(
                "/rest/v1/agent/conversations/{conversation}/typing"
            )))
            .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
            .json(&body)
            .send()
    };
    assert_eq!(
        typing(json!({"state": "start"})).await.unwrap().status(),
        204
    );
    assert_eq!(
        c.next().await,
        json!({"type": "typing", "conversationId": conversation, "state": "start"})
    );
    assert_eq!(
        typing(json!({"state": "stop"})).await.unwrap().status(),
        204
    );
    assert_eq!(c.next().await["state"], "stop");
    assert_error(
        typing(json!({"state": "maybe"})).await.unwrap(),
        400,
        "invalid_request",
        "state must be",
    )
    .await;
    let other = app.add_tenant("company_other", "agent_other").await;
    let res = app
        .client
        .post(app.url(&format!(
            "/rest/v1/agent/conversations/{conversation}/typing"
        )))
        .basic_auth(&other.key_id, Some(&other.key_secret))
        .json(&json!({"state": "start"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// The company's feed: the user typing, every new message (the user's and the agent's) and a
/// conversation closed, as server-sent events; another company's feed hears none of it; a
/// revoked key's feed ends.
#[tokio::test]
async fn the_company_feed_hears_typing_messages_and_closes() {
    let app = spawn_app().await;
    let feed_of = |key_id: &str, secret: &str| {
        app.client
            .get(app.url("/rest/v1/agent/events"))
            .basic_auth(key_id, Some(secret))
            .send()
    };
    let res = feed_of(&app.tenant.key_id, &app.tenant.key_secret)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut feed = common::EventStream::new(res);
    let other = app.add_tenant("company_other", "agent_other").await;
    let mut others =
        common::EventStream::new(feed_of(&other.key_id, &other.key_secret).await.unwrap());

    let token = app.token_for("u1").await;
    let (mut c, _) = Client::ready(&app.ws_url(), &token).await;
    let conversation = open(&mut c).await;
    c.send(json!({"type": "typing", "conversationId": conversation, "state": "start"}))
        .await;
    let (name, data) = feed.next().await;
    assert_eq!(name, "typing");
    assert_eq!(data["conversationId"], conversation.as_str());
    assert_eq!(data["state"], "start");
    assert!(data["userId"].is_string());
    // The same state again at once is not passed on (a client may send it per key press).
    c.send(json!({"type": "typing", "conversationId": conversation, "state": "start"}))
        .await;

    c.send(json!({"type": "send", "conversationId": conversation,
                  "clientMessageId": "m1", "text": "hello"}))
        .await;
    let (name, data) = feed.next().await;
    assert_eq!(name, "message");
    assert_eq!(data["message"]["seq"], 1);
    assert_eq!(data["message"]["sender"]["kind"], "user");

    let res = app
        .client
        .post(app.url(&format!(
            "/rest/v1/agent/conversations/{conversation}/messages"
        )))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .json(&json!({"text": "hi there"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (name, data) = feed.next().await;
    assert_eq!(
        (name.as_str(), &data["message"]["seq"]),
        ("message", &json!(2))
    );
    assert_eq!(data["message"]["sender"]["kind"], "agent");

    let res = app
        .client
        .post(app.url(&format!(
            "/rest/v1/agent/conversations/{conversation}/close"
        )))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (name, data) = feed.next().await;
    assert_eq!(name, "conversation_closed");
    assert_eq!(data["conversationId"], conversation.as_str());

    // Another company's feed heard nothing; its key revoked, it ends.
    let revoked = app
        .db
        .revoke_api_key(&other.key_id, app.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(revoked.id, other.key_id);
    app.state.tokens.wake();
    assert_eq!(others.next_within(Duration::from_secs(5)).await, None);
}
