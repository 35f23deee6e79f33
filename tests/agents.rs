//! Agents that answer, through the real server: replies streamed by the company's backend
//! (`status: streaming`, then chunks by `PATCH`), seen live by the user's sockets as
//! `delta` frames and a final `message`, and ended as `failed` when they stop growing.

mod common;

use std::time::Duration;

use common::{TestApp, assert_error, spawn_app, spawn_app_with, user_socket};
use performchat::config::Settings;
use reqwest::Response;
use serde_json::{Value, json};

async fn agent_send(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> Response {
    app.client
        .request(method, app.url(path))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Starts a streamed reply with `text`; returns the message.
async fn start(app: &TestApp, conversation: &str, text: &str) -> Value {
    let res = agent_send(
        app,
        reqwest::Method::POST,
        &format!("/rest/v1/agent/conversations/{conversation}/messages"),
        json!({"text": text, "status": "streaming", "clientMessageId": "reply-1"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["message"].clone()
}

async fn grow(app: &TestApp, conversation: &str, message: &str, body: Value) -> Response {
    agent_send(
        app,
        reqwest::Method::PATCH,
        &format!("/rest/v1/agent/conversations/{conversation}/messages/{message}"),
        body,
    )
    .await
}

#[tokio::test]
async fn a_streamed_reply_reaches_the_user_in_deltas_then_whole() {
    let app = spawn_app().await;
    let (mut socket, conversation) = user_socket(&app, "streamed-to").await;

    let started = start(&app, &conversation, "").await;
    assert_eq!(started["status"], "streaming");
    assert_eq!(started["text"], "");
    assert_eq!(started["sender"]["kind"], "agent");
    let id = started["id"].as_str().unwrap().to_owned();
    let pushed = socket.next().await;
    assert_eq!(pushed["type"], "message");
    assert_eq!(pushed["message"]["id"], id);
    assert_eq!(pushed["message"]["status"], "streaming");

    for (chunk, offset) in [("Hel", 0), ("lo", 3), ("\n", 5), (" world", 6)] {
        let res = grow(&app, &conversation, &id, json!({"append": chunk})).await;
        assert_eq!(res.status(), 200);
        let delta = socket.next().await;
        assert_eq!(
            delta,
            json!({"type": "delta", "conversationId": conversation, "messageId": id,
                   "offset": offset, "text": chunk})
        );
    }

    // Neither field: nothing changes, nothing is pushed (it only keeps the reply alive).
    let res = grow(&app, &conversation, &id, json!({})).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"]["text"],
        "Hello\n world"
    );

    // A socket that connects mid-reply sees the text so far.
    let (mut late, _) = user_socket(&app, "streamed-to").await;
    late.send(json!({"type": "history", "conversationId": conversation, "id": "h"}))
        .await;
    let history = late.next().await;
    let so_far = &history["messages"].as_array().unwrap()[0];
    assert_eq!(so_far["text"], "Hello\n world");
    assert_eq!(so_far["status"], "streaming");

    let res = grow(
        &app,
        &conversation,
        &id,
        json!({"append": "!", "status": "complete"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"]["text"], "Hello\n world!");
    assert_eq!(body["message"]["status"], "complete");
    for s in [&mut socket, &mut late] {
        assert_eq!(s.next().await["text"], "!");
        let whole = s.next().await;
        assert_eq!(whole["type"], "message");
        assert_eq!(whole["message"]["id"], id);
        assert_eq!(whole["message"]["seq"], started["seq"]);
        assert_eq!(whole["message"]["status"], "complete");
        assert_eq!(whole["message"]["text"], "Hello\n world!");
    }

    // Finished: no more chunks.
    let res = grow(&app, &conversation, &id, json!({"append": "more"})).await;
    assert_error(res, 409, "message_not_streaming", "complete").await;
    // The same clientMessageId again: the stored reply, not a second one.
    let res = agent_send(
        &app,
        reqwest::Method::POST,
        &format!("/rest/v1/agent/conversations/{conversation}/messages"),
        json!({"status": "streaming", "clientMessageId": "reply-1"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["message"]["id"], id);
}

#[tokio::test]
async fn bad_chunks_and_unknown_replies_get_errors_that_name_the_problem() {
    let app = spawn_app().await;
    let (_socket, conversation) = user_socket(&app, "chunked").await;
    let id = start(&app, &conversation, "Hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, says) in [
        (json!({"append": 5}), "append must be a string"),
        (json!({"append": "a\u{7}"}), "control characters"),
        (
            json!({"status": "done"}),
            "status must be complete or failed",
        ),
        (
            json!({"append": "a".repeat(3999)}),
            "longer than 4000 characters",
        ),
    ] {
        let res = grow(&app, &conversation, &id, body).await;
        assert_error(res, 400, "invalid_request", says).await;
    }
    let res = grow(&app, &conversation, "msg_nope", json!({"append": "x"})).await;
    assert_error(res, 404, "not_found", "no such message").await;
    // Another company's key sees neither the conversation nor the reply.
    let other = app.add_tenant("co_other", "agt_other").await;
    let res = app
        .client
        .patch(app.url(&format!(
            "/rest/v1/agent/conversations/{conversation}/messages/{id}"
        )))
        .basic_auth(&other.key_id, Some(&other.key_secret))
        .json(&json!({"append": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found", "no such conversation").await;
    // A streaming start with a text that is not a string.
    let res = agent_send(
        &app,
        reqwest::Method::POST,
        &format!("/rest/v1/agent/conversations/{conversation}/messages"),
        json!({"status": "typing"}),
    )
    .await;
    assert_error(
        res,
        400,
        "invalid_request",
        "status must be complete or streaming",
    )
    .await;
}

#[tokio::test]
async fn a_streamed_reply_that_stops_growing_fails_with_its_text_so_far() {
    let settings = Settings {
        stream_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let app = spawn_app_with(settings).await;
    let (mut socket, conversation) = user_socket(&app, "left-waiting").await;
    let id = start(&app, &conversation, "Let me check").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(socket.next().await["message"]["status"], "streaming");
    // Each call within the timeout keeps it alive: a chunk, or a call with neither field.
    let idle = async |body: Value| {
        app.advance_clock(Duration::from_secs(20)).await;
        // The job runs every second: let it run on the moved clock.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let res = grow(&app, &conversation, &id, body).await;
        assert_eq!(res.status(), 200, "within the timeout");
    };
    idle(json!({"append": " that"})).await;
    assert_eq!(socket.next().await["text"], " that");
    idle(json!({})).await;
    idle(json!({"append": " for you"})).await;
    assert_eq!(socket.next().await["text"], " for you");

    // Past it: the server's periodic job ends the reply, and the user hears of it.
    app.advance_clock(Duration::from_secs(31)).await;
    let ended = socket.next().await;
    assert_eq!(ended["type"], "message", "{ended}");
    assert_eq!(ended["message"]["id"], id);
    assert_eq!(ended["message"]["status"], "failed");
    assert_eq!(ended["message"]["text"], "Let me check that for you");
    let res = grow(&app, &conversation, &id, json!({"append": "late"})).await;
    assert_error(res, 409, "message_not_streaming", "failed").await;
}

#[tokio::test]
async fn a_conversation_handed_to_a_person_waits_for_one_until_an_operator_replies() {
    let app = spawn_app().await;
    let (mut socket, conversation) = user_socket(&app, "wants-a-person").await;
    let path = |action: &str| format!("/rest/v1/agent/conversations/{conversation}/{action}");
    let post = |action: &'static str| {
        let path = path(action);
        let app = &app;
        async move { agent_send(app, reqwest::Method::POST, &path, json!({})).await }
    };
    let waiting = async || {
        let res = app
            .company_get("/rest/v1/agent/conversations?status=waiting_human")
            .await;
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        page["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(waiting().await.is_empty());

    let res = post("handoff").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["conversation"]["handler"], "waiting_human");
    assert_eq!(
        socket.next().await,
        json!({"type": "agent_state", "conversationId": conversation, "state": "handoff"})
    );
    let said = socket.next().await;
    assert_eq!(said["type"], "message");
    assert_eq!(said["message"]["sender"]["kind"], "system");
    assert!(said["message"]["text"].as_str().unwrap().contains("person"));
    assert_eq!(waiting().await, vec![conversation.clone()]);
    // Again: nothing changes, nothing is said twice.
    let res = post("handoff").await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["conversation"]["handler"],
        "waiting_human"
    );

    // The first reply of a person takes it.
    let res = agent_send(
        &app,
        reqwest::Method::POST,
        &path("messages"),
        json!({"text": "Hi, I'm Alice.", "senderKind": "operator", "senderName": "Alice"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let reply = socket.next().await;
    assert_eq!(
        reply["message"]["sender"],
        json!({"kind": "operator", "name": "Alice"})
    );
    assert_eq!(
        socket.next().await,
        json!({"type": "agent_state", "conversationId": conversation, "state": "human"})
    );
    assert!(waiting().await.is_empty());
    // The user's own view says who answers, after a reconnect too.
    socket.send(json!({"type": "open", "id": "again"})).await;
    let opened = socket.next().await;
    assert_eq!(opened["conversation"]["handler"], "human");

    // Given back to the agent.
    let res = post("release").await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["conversation"]["handler"],
        "bot"
    );
    assert_eq!(
        socket.next().await,
        json!({"type": "agent_state", "conversationId": conversation, "state": "bot"})
    );

    // Each move is in the audit trail, in order.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let moves = loop {
        let res = app.company_get("/rest/v1/audit?limit=1000").await;
        let page: Value = res.json().await.unwrap();
        let mut moves: Vec<String> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"] == conversation.as_str())
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .filter(|k| k != "conversation.opened")
            .collect();
        moves.sort();
        if moves.len() >= 3 || std::time::Instant::now() > deadline {
            break moves;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        moves,
        [
            "conversation.handed_off",
            "conversation.released",
            "conversation.taken"
        ]
    );

    // A closed conversation cannot be handed over; another company's is not there.
    let res = post("close").await;
    assert_eq!(res.status(), 200);
    let res = post("handoff").await;
    assert_error(res, 409, "conversation_closed", "closed").await;
    let other = app.add_tenant("co_other", "agt_other").await;
    let res = app
        .client
        .post(app.url(&path("release")))
        .basic_auth(&other.key_id, Some(&other.key_secret))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found", "no such conversation").await;
}
