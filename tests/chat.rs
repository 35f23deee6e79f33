//! The chat over REST through the real server: the user side with a chat token, the company
//! side with its key pair; conversations, idempotent sends, history windows, replies, close,
//! tenant isolation, concurrency and bad input.

mod common;

use std::time::Duration;

use common::{TestApp, assert_error, spawn_app, spawn_app_with};
use futures_util::future::join_all;
use performchat::config::Settings;
use reqwest::Response;
use serde_json::{Value, json};

/// A chat user: a token and its calls.
struct User<'a> {
    app: &'a TestApp,
    token: String,
}

impl<'a> User<'a> {
    async fn new(app: &'a TestApp, user_id: &str) -> User<'a> {
        User {
            app,
            token: app.token_for(user_id).await,
        }
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .app
            .client
            .post(self.app.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> Response {
        self.app
            .client
            .get(self.app.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn open(&self) -> Value {
        let res = self.post("/rest/v1/chat/conversations", None).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Opens (or resumes) the conversation and returns its id.
    async fn open_id(&self) -> String {
        self.open().await["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn send(&self, conversation: &str, cmid: &str, text: &str) -> Response {
        self.post(
            &format!("/rest/v1/chat/conversations/{conversation}/messages"),
            Some(json!({"clientMessageId": cmid, "text": text})),
        )
        .await
    }

    async fn messages(&self, conversation: &str, query: &str) -> Value {
        let res = self
            .get(&format!(
                "/rest/v1/chat/conversations/{conversation}/messages{query}"
            ))
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

/// The company side, as HTTP Basic with the main tenant's key pair.
async fn agent_get(app: &TestApp, path: &str) -> Response {
    app.client
        .get(app.url(path))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .send()
        .await
        .unwrap()
}

async fn agent_post(app: &TestApp, path: &str, body: Value) -> Response {
    app.client
        .post(app.url(path))
        .basic_auth(&app.tenant.key_id, Some(&app.tenant.key_secret))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn seqs(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_user_opens_resumes_and_sends_messages_once_each() {
    let app = spawn_app().await;
    let user = User::new(&app, "u1").await;
    let opened = user.open().await;
    let conversation = &opened["conversation"];
    let id = conversation["id"].as_str().unwrap();
    assert_eq!(conversation["status"], "open");
    assert_eq!(conversation["agentId"], app.tenant.agent);
    assert_eq!(conversation["lastSeq"], 0);
    assert!(conversation["closedAt"].is_null());
    assert_eq!(opened["messages"], json!([]));
    assert_eq!(
        user.open().await["conversation"]["id"],
        id,
        "resumed, not a second one"
    );

    let res = user.send(id, "m-1", "Hello\nthere").await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    let m = &first["message"];
    assert_eq!(m["seq"], 1);
    assert_eq!(m["clientMessageId"], "m-1");
    assert_eq!(m["sender"], json!({"kind": "user", "name": null}));
    assert_eq!(m["text"], "Hello\nthere");
    assert_eq!(m["status"], "complete");
    assert_eq!(m["conversationId"], id);
    let created = m["createdAt"].as_str().unwrap();
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[19] == b'.',
        "RFC 3339 with milliseconds: {created}"
    );
    let again = user.send(id, "m-1", "Hello\nthere").await;
    assert_eq!(
        again.status(),
        200,
        "the same clientMessageId: the stored message"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["message"], first["message"]);
    assert_eq!(user.send(id, "m-2", "second").await.status(), 201);
    assert_eq!(user.send(id, "m-3", "third").await.status(), 201);

    let all = user.messages(id, "").await;
    assert_eq!(seqs(&all), [1, 2, 3]);
    assert_eq!(all["hasMore"], false);
    assert_eq!(seqs(&user.messages(id, "?after=1").await), [2, 3]);
    assert_eq!(seqs(&user.messages(id, "?before=3").await), [1, 2]);
    let newest = user.messages(id, "?limit=2").await;
    assert_eq!(seqs(&newest), [2, 3]);
    assert_eq!(newest["hasMore"], true);
    let catch_up = user.messages(id, "?after=0&limit=2").await;
    assert_eq!(seqs(&catch_up), [1, 2]);
    assert_eq!(catch_up["hasMore"], true);
    let reopened = user.open().await;
    assert_eq!(reopened["conversation"]["lastSeq"], 3);
    assert_eq!(seqs(&reopened), [1, 2, 3]);

    let read = user
        .post(
            &format!("/rest/v1/chat/conversations/{id}/read"),
            Some(json!({"seq": 2})),
        )
        .await;
    assert_eq!(read.status(), 204);
    let past = user
        .post(
            &format!("/rest/v1/chat/conversations/{id}/read"),
            Some(json!({"seq": 4})),
        )
        .await;
    assert_error(past, 400, "invalid_request", "seq must be from 0").await;
}

#[tokio::test]
async fn the_company_replies_as_its_agent_or_a_person_and_closes_the_conversation() {
    let app = spawn_app().await;
    let user = User::new(&app, "u1").await;
    let id = user.open_id().await;
    assert_eq!(
        user.send(&id, "q1", "Where is my order?").await.status(),
        201
    );

    let list: Value = agent_get(&app, "/rest/v1/agent/conversations?status=open")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["conversations"][0]["id"], id);
    assert_eq!(list["conversations"][0]["lastSeq"], 1);
    let path = format!("/rest/v1/agent/conversations/{id}/messages");
    let seen: Value = agent_get(&app, &path).await.json().await.unwrap();
    assert_eq!(seen["messages"][0]["text"], "Where is my order?");

    let res = agent_post(&app, &path, json!({"text": "On its way."})).await;
    assert_eq!(res.status(), 201);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(
        reply["message"]["sender"],
        json!({"kind": "agent", "name": "Support Agent"})
    );
    assert_eq!(reply["message"]["seq"], 2);
    assert!(
        reply["message"]["clientMessageId"]
            .as_str()
            .unwrap()
            .starts_with("srv:")
    );
    let res = agent_post(&app, &path, json!({"text": "Hi", "senderKind": "operator"})).await;
    assert_error(res, 400, "invalid_request", "senderName is required").await;
    let res = agent_post(
        &app,
        &path,
        json!({"text": "Alice here.", "senderKind": "operator", "senderName": "Alice", "clientMessageId": "op-1"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let again = agent_post(
        &app,
        &path,
        json!({"text": "Alice here.", "senderKind": "operator", "senderName": "Alice", "clientMessageId": "op-1"}),
    )
    .await;
    assert_eq!(again.status(), 200);
    let page = user.messages(&id, "").await;
    assert_eq!(seqs(&page), [1, 2, 3]);
    assert_eq!(
        page["messages"][2]["sender"],
        json!({"kind": "operator", "name": "Alice"})
    );

    let closed = agent_post(
        &app,
        &format!("/rest/v1/agent/conversations/{id}/close"),
        json!({}),
    )
    .await;
    assert_eq!(closed.status(), 200);
    let closed: Value = closed.json().await.unwrap();
    assert_eq!(closed["conversation"]["status"], "closed");
    assert!(closed["conversation"]["closedAt"].is_string());
    let res = user.send(&id, "late", "hello?").await;
    assert_error(res, 409, "conversation_closed", "closed").await;
    assert_eq!(
        user.send(&id, "q1", "Where is my order?").await.status(),
        200,
        "a resend of a stored message still answers it"
    );
    let res = agent_post(&app, &path, json!({"text": "late"})).await;
    assert_error(res, 409, "conversation_closed", "closed").await;

    let second = user.open().await;
    let second_id = second["conversation"]["id"].as_str().unwrap();
    assert_ne!(second_id, id, "a closed conversation is not resumed");
    assert_eq!(second["messages"], json!([]));
    let mine: Value = user
        .get("/rest/v1/chat/conversations")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = mine["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second_id, id.as_str()], "newest first");
    let first_page: Value = user
        .get("/rest/v1/chat/conversations?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first_page["conversations"][0]["id"], second_id);
    let cursor = first_page["nextCursor"].as_str().unwrap();
    let next: Value = user
        .get(&format!(
            "/rest/v1/chat/conversations?limit=1&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["conversations"][0]["id"], id);

    let open_only: Value = agent_get(&app, "/rest/v1/agent/conversations?status=closed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(open_only["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(open_only["conversations"][0]["id"], id);
}

#[tokio::test]
async fn a_conversation_of_another_user_agent_or_company_reads_like_one_that_does_not_exist() {
    let app = spawn_app().await;
    let owner = User::new(&app, "owner").await;
    let id = owner.open_id().await;
    let stranger = User::new(&app, "stranger").await;
    let body_of = |res: Response| async move {
        assert_eq!(res.status(), 404);
        res.text().await.unwrap()
    };
    let nobody = body_of(
        stranger
            .get("/rest/v1/chat/conversations/conv_nobody/messages")
            .await,
    )
    .await;
    assert_eq!(
        body_of(
            stranger
                .get(&format!("/rest/v1/chat/conversations/{id}/messages"))
                .await
        )
        .await,
        nobody
    );
    assert_eq!(body_of(stranger.send(&id, "x", "hi").await).await, nobody);

    // The same user with another agent of the company.
    app.db
        .insert_agent(
            "agent_sales",
            &app.tenant.company,
            "Sales",
            true,
            false,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    app.synced().await;
    let res = app
        .mint(json!({"userId": "owner", "agentId": "agent_sales"}))
        .await;
    let other_agent = User {
        app: &app,
        token: res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    assert_eq!(
        body_of(
            other_agent
                .get(&format!("/rest/v1/chat/conversations/{id}/messages"))
                .await
        )
        .await,
        nobody
    );

    // Another company's key.
    let other = app.add_tenant("company_other", "agent_other").await;
    let res = app
        .client
        .get(app.url(&format!("/rest/v1/agent/conversations/{id}/messages")))
        .basic_auth(&other.key_id, Some(&other.key_secret))
        .send()
        .await
        .unwrap();
    let foreign = body_of(res).await;
    let res = app
        .client
        .get(app.url("/rest/v1/agent/conversations/conv_nobody/messages"))
        .basic_auth(&other.key_id, Some(&other.key_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign, body_of(res).await);
    assert_eq!(foreign, nobody);
    let listed: Value = app
        .client
        .get(app.url("/rest/v1/agent/conversations"))
        .basic_auth(&other.key_id, Some(&other.key_secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["conversations"], json!([]), "only its own company's");
}

#[tokio::test]
async fn concurrent_sends_get_distinct_gapless_seqs_and_no_duplicates() {
    let app = spawn_app_with(Settings {
        chat_send_rate: 0,
        ..Default::default()
    })
    .await;
    let user = User::new(&app, "busy").await;
    let id = user.open_id().await;
    // 40 distinct messages, each sent twice at once, with replies from the company between.
    let sends = (0..80).map(|i| {
        let user = &user;
        let id = &id;
        async move {
            let res = user
                .send(id, &format!("c-{}", i % 40), &format!("text {}", i % 40))
                .await;
            assert!(
                res.status() == 201 || res.status() == 200,
                "{}",
                res.status()
            );
            res.json::<Value>().await.unwrap()["message"].clone()
        }
    });
    let replies = (0..10).map(|i| {
        let app = &app;
        let id = &id;
        async move {
            let path = format!("/rest/v1/agent/conversations/{id}/messages");
            assert_eq!(
                agent_post(app, &path, json!({"text": format!("reply {i}")}))
                    .await
                    .status(),
                201
            );
        }
    });
    let (sent, _) = tokio::join!(join_all(sends), join_all(replies));
    let all = user.messages(&id, "?limit=200").await;
    assert_eq!(
        seqs(&all),
        (1..=50).collect::<Vec<_>>(),
        "gapless, no duplicate rows"
    );
    for i in 0..40 {
        let twins: Vec<&Value> = sent
            .iter()
            .filter(|m| m["clientMessageId"] == format!("c-{i}"))
            .collect();
        assert_eq!(twins.len(), 2);
        assert_eq!(
            twins[0]["id"], twins[1]["id"],
            "both sends answered with the one message"
        );
    }
}

#[tokio::test]
async fn bad_chat_input_gets_errors_that_name_the_problem() {
    let app = spawn_app().await;
    let user = User::new(&app, "u").await;
    let id = user.open_id().await;
    let path = format!("/rest/v1/chat/conversations/{id}/messages");
    for (body, says) in [
        (json!({"text": "hi"}), "clientMessageId is required"),
        (
            json!({"clientMessageId": "a", "text": ""}),
            "text must not be empty",
        ),
        (json!({"clientMessageId": "a"}), "text is required"),
        (
            json!({"clientMessageId": "a", "text": 5}),
            "text must be a string",
        ),
        (
            json!({"clientMessageId": "a", "text": "a\u{0}b"}),
            "control characters",
        ),
        (
            json!({"clientMessageId": "a", "text": "x".repeat(4001)}),
            "at most 4000",
        ),
        (
            json!({"clientMessageId": "a b", "text": "hi"}),
            "clientMessageId must be 1–128",
        ),
        (
            json!({"clientMessageId": "x".repeat(129), "text": "hi"}),
            "clientMessageId must be 1–128",
        ),
    ] {
        assert_error(
            user.post(&path, Some(body)).await,
            400,
            "invalid_request",
            says,
        )
        .await;
    }
    for (query, says) in [
        ("?limit=0", "limit must be an integer from 1 to 200"),
        ("?limit=201", "limit must be an integer from 1 to 200"),
        ("?before=2&after=1", "not both"),
        ("?after=-1", "after must be an integer"),
        ("?after=1&after=2", "more than once"),
    ] {
        assert_error(
            user.get(&format!("{path}{query}")).await,
            400,
            "invalid_request",
            says,
        )
        .await;
    }
    let res = user.get("/rest/v1/chat/conversations?cursor=garbage").await;
    assert_error(res, 400, "invalid_request", "cursor").await;
    let res = app
        .client
        .post(app.url(&path))
        .json(&json!({"clientMessageId": "a", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid", "Bearer").await;
    let res = agent_get(&app, "/rest/v1/agent/conversations?status=maybe").await;
    assert_error(
        res,
        400,
        "invalid_request",
        "status must be open, closed or waiting_human",
    )
    .await;
    let res = app
        .client
        .get(app.url("/rest/v1/agent/conversations"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "invalid_credentials", "HTTP Basic").await;
}

#[tokio::test]
async fn a_key_without_the_chat_scope_cannot_use_the_company_side() {
    let app = spawn_app().await;
    let secret = performchat::auth::KeySecret::generate();
    let key_id = performchat::auth::api_key::new_key_id();
    let policy = performchat::db::KeyPolicy {
        scopes: "mint,manage".into(),
        ..Default::default()
    };
    app.db
        .insert_api_key_with(
            &key_id,
            &app.tenant.company,
            &secret.hash(),
            &policy,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    app.synced().await;
    let res = app
        .client
        .get(app.url("/rest/v1/agent/conversations"))
        .basic_auth(&key_id, Some(secret.expose()))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "insufficient_scope", "chat").await;
}

#[tokio::test]
async fn browsers_may_call_the_user_side_and_never_the_company_side() {
    let app = spawn_app().await;
    let preflight = |path: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let res = preflight("/rest/v1/chat/conversations").await.unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let res = preflight("/rest/v1/agent/conversations").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_user_sending_too_fast_is_told_to_wait_and_the_company_is_not() {
    let app = spawn_app_with(Settings {
        chat_send_rate: 1,
        chat_send_burst: 3,
        ..Default::default()
    })
    .await;
    let user = User::new(&app, "fast").await;
    let id = user.open_id().await;
    for i in 0..3 {
        assert_eq!(user.send(&id, &format!("m{i}"), "hi").await.status(), 201);
    }
    let res = user.send(&id, "m3", "hi").await;
    assert_eq!(res.headers()["retry-after"], "1");
    assert_error(res, 429, "rate_limited", "too many messages").await;
    let path = format!("/rest/v1/agent/conversations/{id}/messages");
    for _ in 0..5 {
        assert_eq!(
            agent_post(&app, &path, json!({"text": "reply"}))
                .await
                .status(),
            201
        );
    }
}

/// A token from a running server's banner key.
async fn mint(client: &reqwest::Client, base: &str, key: &Value, user: &str) -> String {
    let body = json!({"keyId": key["keyId"], "keySecret": key["keySecret"], "userId": user});
    let minted: Value = client
        .post(format!("{base}/rest/v1/auth/token"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    minted["token"].as_str().unwrap().to_owned()
}

/// A 201 or an `ack` is only sent after the commit: kill -9 the real server under load from
/// REST and socket senders, and every message it answered is there after a restart, with
/// its seq.
#[tokio::test]
async fn kill_9_under_load_loses_no_answered_message() {
    let db = common::TestDb::new().await;
    let mut server = common::Server::start(&db.url, &["--json", "--chat-send-rate", "0"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    let b = banner["bootstrap"].clone();
    let client = reqwest::Client::new();
    let base = server.url("");
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (client, base, b) = (client.clone(), base.clone(), b.clone());
            tokio::spawn(async move {
                let token = mint(&client, &base, &b, &format!("w{w}")).await;
                let opened: Value = client
                    .post(format!("{base}/rest/v1/chat/conversations"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let conv = opened["conversation"]["id"].as_str().unwrap().to_owned();
                let mut answered = Vec::new();
                for i in 0.. {
                    let send = client
                        .post(format!("{base}/rest/v1/chat/conversations/{conv}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"clientMessageId": format!("m{i}"), "text": "durable?"}))
                        .send()
                        .await;
                    let Ok(res) = send else { break };
                    if res.status() != 201 {
                        break;
                    }
                    let Ok(body) = res.json::<Value>().await else {
                        break;
                    };
                    answered.push((
                        conv.clone(),
                        body["message"]["seq"].as_i64().unwrap(),
                        body["message"]["id"].clone(),
                    ));
                }
                answered
            })
        })
        .collect();
    let ws_url = server.ws_url();
    let socket_workers: Vec<_> = (0..3)
        .map(|w| {
            let (client, base, b, ws_url) =
                (client.clone(), base.clone(), b.clone(), ws_url.clone());
            tokio::spawn(async move {
                use futures_util::StreamExt;
                use tokio_tungstenite::tungstenite::Message;
                let token = mint(&client, &base, &b, &format!("s{w}")).await;
                let (mut socket, _) = common::ChatClient::ready(&ws_url, &token).await;
                socket.send(json!({"type": "open"})).await;
                let conv = socket.next().await["conversation"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let mut answered = Vec::new();
                'sending: for i in 0.. {
                    let frame = json!({"type": "send", "conversationId": conv,
                                       "clientMessageId": format!("m{i}"), "text": "durable?"});
                    use futures_util::SinkExt;
                    if socket
                        .ws
                        .send(Message::text(frame.to_string()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    loop {
                        let Some(Ok(Message::Text(t))) = socket.ws.next().await else {
                            break 'sending;
                        };
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] == "ack" {
                            answered.push((
                                conv.clone(),
                                v["message"]["seq"].as_i64().unwrap(),
                                v["message"]["id"].clone(),
                            ));
                            break;
                        }
                    }
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill(); // SIGKILL: no shutdown, no flush.
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    let mut acked = 0;
    for w in socket_workers {
        let a = w.await.unwrap();
        acked += a.len();
        answered.extend(a);
    }
    assert!(acked > 20, "too few acks to prove anything: {acked}");
    assert!(
        answered.len() > 20,
        "too little load to prove anything: {}",
        answered.len()
    );

    let db = performchat::db::Db::connect(&db.url).await.unwrap();
    for (conv, seq, id) in &answered {
        let (found, _) = db
            .list_messages(conv, performchat::db::Window::After(seq - 1), 1)
            .await
            .unwrap();
        assert_eq!(
            found.first().map(|m| json!(m.id)),
            Some(id.clone()),
            "answered message {conv}#{seq} was lost"
        );
    }
}
