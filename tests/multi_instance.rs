//! Several `performchat serve` processes sharing one database (a PostgreSQL behind a load
//! balancer, or one SQLite file on one machine): what one instance or the CLI changes, every
//! other instance applies within a second, and concurrent first requests agree on one user.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Server, TestDb, cli};
use serde_json::{Value, json};

struct Pair {
    a: Server,
    b: Server,
    key: Value,
    client: reqwest::Client,
}

async fn two_instances(db: &TestDb) -> Pair {
    // On PostgreSQL the poll is slowed to 30 s, so that only LISTEN/NOTIFY can deliver a
    // change within the second these tests allow.
    let args: &[&str] = if db.is_postgres() {
        &["--json", "--change-poll-ms", "30000"]
    } else {
        &["--json"]
    };
    let a = Server::start(&db.url, args);
    let banner: Value = serde_json::from_str(&a.stdout).unwrap();
    let b = Server::start(&db.url, args);
    assert!(b.stdout.is_empty(), "only the first instance bootstraps");
    Pair {
        a,
        b,
        key: banner["bootstrap"].clone(),
        client: reqwest::Client::new(),
    }
}

impl Pair {
    fn body(&self, extra: Value) -> Value {
        let mut body = extra;
        body["keyId"] = self.key["keyId"].clone();
        body["keySecret"] = self.key["keySecret"].clone();
        body
    }

    async fn post(&self, on: &Server, path: &str, extra: Value) -> reqwest::Response {
        self.client
            .post(on.url(path))
            .json(&self.body(extra))
            .send()
            .await
            .unwrap()
    }

    async fn mint(&self, on: &Server, user: &str) -> Value {
        let res = self
            .post(on, "/rest/v1/auth/token", json!({"userId": user}))
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn me(&self, on: &Server, token: &str) -> u16 {
        let res = self
            .client
            .get(on.url("/rest/v1/auth/me"))
            .bearer_auth(token)
            .send()
            .await;
        res.unwrap().status().as_u16()
    }

    /// Polls `on` until the token answers `status`; fails after one second.
    async fn within_a_second(&self, on: &Server, token: &str, status: u16) {
        let start = Instant::now();
        while self.me(on, token).await != status {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "not {status} within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn changes_on_one_instance_reach_the_other_within_a_second() {
    let db = TestDb::new().await;
    let p = two_instances(&db).await;

    // Minted on A, verified on B.
    let minted = p.mint(&p.a, "user_123").await;
    let token = minted["token"].as_str().unwrap();
    assert_eq!(p.me(&p.b, token).await, 200);

    // Invalidated on A → dead on B; a token minted on B right after lives on A.
    let res = p
        .post(
            &p.a,
            "/rest/v1/auth/invalidate",
            json!({"userId": minted["user"]["id"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    p.within_a_second(&p.b, token, 401).await;
    let fresh = p.mint(&p.b, "user_123").await;
    let fresh = fresh["token"].as_str().unwrap();
    assert_eq!(p.me(&p.a, fresh).await, 200);

    // Revoked on B → dead on A.
    let res = p
        .post(&p.b, "/rest/v1/auth/revoke", json!({"token": fresh}))
        .await;
    assert_eq!(res.status(), 200);
    p.within_a_second(&p.a, fresh, 401).await;

    // The CLI reaches both.
    let other = p.mint(&p.a, "user_456").await;
    let other = other["token"].as_str().unwrap();
    cli(
        &db.url,
        &["agent", "update", "agent_default", "--active", "false"],
    );
    p.within_a_second(&p.a, other, 401).await;
    p.within_a_second(&p.b, other, 401).await;
    cli(
        &db.url,
        &["agent", "update", "agent_default", "--active", "true"],
    );
    p.within_a_second(&p.a, other, 200).await;
    p.within_a_second(&p.b, other, 200).await;
}

#[tokio::test]
async fn two_instances_agree_on_one_user_id_under_concurrent_first_requests() {
    let db = TestDb::new().await;
    let p = two_instances(&db).await;
    let body = p.body(json!({"userId": "racing_user"}));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let server = if i % 2 == 0 { &p.a } else { &p.b };
            let req = p.client.post(server.url("/rest/v1/auth/token")).json(&body);
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 200);
                let body: Value = res.json().await.unwrap();
                body["user"]["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// PostgreSQL stops mid-load and comes back: requests in between get a quick 503, service
/// resumes by itself, no answered user is lost, and invalidations made before still hold.
#[tokio::test]
async fn a_postgresql_restart_mid_load_loses_nothing_and_heals_itself() {
    if std::env::var_os(common::POSTGRES_ENV).is_none() {
        eprintln!(
            "NOT RUN on SQLite: this test runs with {}",
            common::POSTGRES_ENV
        );
        return;
    }
    let pg = common::PrivatePostgres::start();
    let server = Server::start(&pg.url, &["--json"]);
    let banner: Value = serde_json::from_str(&server.stdout).unwrap();
    let key = banner["bootstrap"].clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let body =
        |user: &str| json!({"keyId": key["keyId"], "keySecret": key["keySecret"], "userId": user});
    let mint_url = server.url("/rest/v1/auth/token");

    // An invalidation made just before the outage.
    let victim: Value = client
        .post(&mint_url)
        .json(&body("victim"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let victim_token = victim["token"].as_str().unwrap().to_owned();
    let inv = json!({"keyId": key["keyId"], "keySecret": key["keySecret"], "externalId": "victim"});
    let res = client
        .post(server.url("/rest/v1/auth/invalidate"))
        .json(&inv)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let stop_load = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, url, stop, key) = (client.clone(), mint_url.clone(), stop_load.clone(), key.clone());
            tokio::spawn(async move {
                let (mut answered, mut unavailable, mut slowest) = (Vec::new(), 0, Duration::ZERO);
                let mut i = 0;
                while !stop.is_cancelled() {
                    i += 1;
                    let user = format!("load_{w}_{i}");
                    let body = json!({"keyId": key["keyId"], "keySecret": key["keySecret"], "userId": user});
                    let started = Instant::now();
                    let res = client.post(&url).json(&body).send().await.expect("the server answers");
                    slowest = slowest.max(started.elapsed());
                    match res.status().as_u16() {
                        200 => {
                            let body: Value = res.json().await.unwrap();
                            answered.push((user, body["user"]["id"].as_str().unwrap().to_owned()));
                        }
                        503 => {
                            let body: Value = res.json().await.unwrap();
                            assert_eq!(body["error"]["code"], "unavailable");
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("unexpected status {other} during the outage"),
                    }
                }
                (answered, unavailable, slowest)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.down();
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.up();
    // Service resumes by itself.
    let healed = Instant::now();
    loop {
        let res = client
            .post(&mint_url)
            .json(&body("after"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "no recovery after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load.cancel();
    let (mut answered, mut unavailable, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    for w in workers {
        let (a, u, s) = w.await.unwrap();
        answered.extend(a);
        unavailable += u;
        slowest = slowest.max(s);
    }
    assert!(unavailable > 0, "the outage was never seen");
    assert!(
        slowest < Duration::from_secs(5),
        "a request hung for {slowest:?}"
    );

    // Nothing answered was lost.
    let db = performchat::db::Db::connect(&pg.url).await.unwrap();
    for (external, id) in &answered {
        let user = db
            .find_user(
                "company_default",
                performchat::db::UserRef::External(external),
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("answered user {external} was lost"));
        assert_eq!(&user.id, id);
    }
    // The invalidation still holds; fresh tokens work.
    let res = client
        .get(server.url("/rest/v1/auth/me"))
        .bearer_auth(&victim_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let fresh: Value = client
        .post(&mint_url)
        .json(&body("victim"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .get(server.url("/rest/v1/auth/me"))
        .bearer_auth(fresh["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A chat socket held by instance B closes within a second of its token's death on
/// instance A: the change feed (NOTIFY on PostgreSQL, the poll on a shared SQLite file)
/// announces it, and B's sockets check their tokens again.
#[tokio::test]
async fn a_token_killed_on_one_instance_closes_its_sockets_on_another_within_a_second() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let db = TestDb::new().await;
    let pair = two_instances(&db).await;
    let minted = pair.mint(&pair.a, "u1").await;
    let token = minted["token"].as_str().unwrap();
    let url = pair
        .b
        .url("/rest/v1/chat/ws")
        .replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(
        json!({"type": "auth", "token": token}).to_string(),
    ))
    .await
    .unwrap();
    let ready = ws.next().await.unwrap().unwrap();
    assert!(ready.to_text().unwrap().contains("\"ready\""), "{ready:?}");

    let res = pair
        .post(
            &pair.a,
            "/rest/v1/auth/invalidate",
            json!({"userId": minted["user"]["id"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let invalidated = Instant::now();
    let code = loop {
        let frame = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("B closed the socket in time")
            .unwrap()
            .unwrap();
        if let Message::Close(Some(close)) = frame {
            break u16::from(close.code);
        }
    };
    assert_eq!(code, 4002);
    assert!(
        invalidated.elapsed() < Duration::from_secs(1),
        "closed {:?} after the invalidation",
        invalidated.elapsed()
    );
}

/// Messages committed on both instances at once reach the user's sockets on each, every one
/// once and in seq order: on PostgreSQL by NOTIFY, on a shared SQLite file by the poll; one
/// stored behind the servers' backs (as by an instance killed between its commit and its
/// NOTIFY) arrives too, by the sweep or the poll.
#[tokio::test]
async fn messages_committed_on_either_instance_reach_every_socket_once_and_in_order() {
    use common::ChatClient;
    use futures_util::future::join_all;

    let db = TestDb::new().await;
    let pair = two_instances(&db).await;
    let minted = pair.mint(&pair.a, "u1").await;
    let token = minted["token"].as_str().unwrap();
    let (mut on_a, _) = ChatClient::ready(&pair.a.ws_url(), token).await;
    let (mut on_b, _) = ChatClient::ready(&pair.b.ws_url(), token).await;
    // The company's feed, on A, hears the messages stored on both.
    let feed = pair
        .client
        .get(pair.a.url("/rest/v1/agent/events"))
        .basic_auth(
            pair.key["keyId"].as_str().unwrap(),
            pair.key["keySecret"].as_str(),
        )
        .send()
        .await
        .unwrap();
    let mut feed = common::EventStream::new(feed);
    on_a.send(json!({"type": "open", "id": "o"})).await;
    let opened = on_a.next().await;
    let conversation = opened["conversation"]["id"].as_str().unwrap().to_owned();

    // 30 user messages through A's socket, 30 agent replies through B's REST API, at once.
    const EACH: i64 = 30;
    for i in 0..EACH {
        on_a.send(json!({"type": "send", "conversationId": conversation,
                         "clientMessageId": format!("u{i}"), "text": format!("user {i}")}))
            .await;
    }
    let reply_url = pair.b.url(&format!(
        "/rest/v1/agent/conversations/{conversation}/messages"
    ));
    let replies = join_all((0..EACH).map(|i| {
        pair.client
            .post(&reply_url)
            .basic_auth(
                pair.key["keyId"].as_str().unwrap(),
                pair.key["keySecret"].as_str(),
            )
            .json(&json!({"text": format!("agent {i}")}))
            .send()
    }))
    .await;
    for r in replies {
        assert_eq!(r.unwrap().status(), 201);
    }
    let replied = Instant::now();

    let seqs_heard = async |socket: &mut ChatClient, until: i64| {
        let mut seqs = Vec::new();
        while seqs.last() != Some(&until) {
            let frame = socket.next().await;
            if frame["type"] == "message" {
                assert_eq!(frame["conversationId"], conversation.as_str());
                seqs.push(frame["message"]["seq"].as_i64().unwrap());
            }
        }
        seqs
    };
    let all: Vec<i64> = (1..=2 * EACH).collect();
    assert_eq!(seqs_heard(&mut on_b, 2 * EACH).await, all, "on B");
    // Announced, not found by the (2 s) sweep.
    assert!(
        replied.elapsed() < Duration::from_secs(1),
        "{:?}",
        replied.elapsed()
    );
    assert_eq!(seqs_heard(&mut on_a, 2 * EACH).await, all, "on A");
    let mut fed = Vec::new();
    while fed.len() < all.len() {
        let (name, data) = feed.next().await;
        assert_eq!(name, "message");
        fed.push(data["message"]["seq"].as_i64().unwrap());
    }
    fed.sort();
    assert_eq!(fed, all, "the feed on A: every message once");

    // Stored by another writer that announced nothing.
    let next = 2 * EACH + 1;
    db.execute(&[
        &format!("UPDATE conversation SET last_seq = {next} WHERE id = '{conversation}'"),
        &format!(
            "INSERT INTO message (id, conversation_id, seq, client_message_id, sender_kind, \
             text, status, created_at) VALUES ('msg_unannounced', '{conversation}', {next}, \
             'quiet', 'agent', 'unannounced', 'complete', 0)"
        ),
    ])
    .await;
    let started = Instant::now();
    assert_eq!(seqs_heard(&mut on_b, next).await, vec![next], "on B");
    assert_eq!(seqs_heard(&mut on_a, next).await, vec![next], "on A");
    if db.is_postgres() {
        // The agent typing, announced on B, reaches A's socket (ephemeral: by NOTIFY only,
        // so not across processes sharing a SQLite file).
        let res = pair
            .client
            .post(pair.b.url(&format!(
                "/rest/v1/agent/conversations/{conversation}/typing"
            )))
            .basic_auth(
                pair.key["keyId"].as_str().unwrap(),
                pair.key["keySecret"].as_str(),
            )
            .json(&json!({"state": "start"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        loop {
            let frame = on_a.next().await;
            if frame["type"] == "typing" {
                assert_eq!(frame["state"], "start");
                break;
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A reply streamed through one instance reaches a socket on the other: chunk by chunk on
/// PostgreSQL (announced by NOTIFY), whole once finished on a SQLite file shared by
/// processes (which hear of nothing but new rows, so the poll watches the reply's status);
/// the company's feed gets the reply when it started (on SQLite, if the poll found it before it
/// finished) and finished; a handoff's agent state and message follow.
#[tokio::test]
async fn a_streamed_reply_through_one_instance_reaches_a_socket_on_the_other() {
    use common::ChatClient;

    let db = TestDb::new().await;
    let pair = two_instances(&db).await;
    let minted = pair.mint(&pair.a, "streamed").await;
    let token = minted["token"].as_str().unwrap();
    let (mut on_b, _) = ChatClient::ready(&pair.b.ws_url(), token).await;
    on_b.send(json!({"type": "open", "id": "o"})).await;
    let opened = on_b.next().await;
    let conversation = opened["conversation"]["id"].as_str().unwrap().to_owned();
    let basic = |req: reqwest::RequestBuilder| {
        req.basic_auth(
            pair.key["keyId"].as_str().unwrap(),
            pair.key["keySecret"].as_str(),
        )
    };
    let feed = basic(pair.client.get(pair.a.url("/rest/v1/agent/events")))
        .send()
        .await
        .unwrap();
    let mut feed = common::EventStream::new(feed);
    let messages = pair.a.url(&format!(
        "/rest/v1/agent/conversations/{conversation}/messages"
    ));
    let res = basic(pair.client.post(&messages))
        .json(&json!({"status": "streaming", "text": "Hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let started: Value = res.json().await.unwrap();
    let id = started["message"]["id"].as_str().unwrap().to_owned();
    let first = on_b.next().await;
    assert_eq!(first["message"]["status"], "streaming", "{first}");

    // A chunk larger than one notification carries, with characters that need escaping.
    let big = "naïve \"quoted\" line\n".repeat(150);
    let mut sent = String::new();
    for chunk in [" there", big.as_str(), "."] {
        let res = basic(pair.client.patch(format!("{messages}/{id}")))
            .json(&json!({"append": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        sent.push_str(chunk);
    }
    if db.is_postgres() {
        let mut heard = String::new();
        while heard.len() < sent.len() {
            let frame = on_b.next().await;
            assert_eq!(frame["type"], "delta", "{frame}");
            assert_eq!(frame["messageId"], id.as_str());
            // "Hi" came with the reply's start: each piece starts where the last ended.
            let at = 2 + heard.chars().count();
            assert_eq!(frame["offset"], at, "{frame}");
            heard.push_str(frame["text"].as_str().unwrap());
        }
        assert_eq!(heard, sent, "every chunk once, in order");
    }

    let res = basic(pair.client.patch(format!("{messages}/{id}")))
        .json(&json!({"status": "complete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let whole = on_b.next().await;
    assert_eq!(whole["type"], "message", "{whole}");
    assert_eq!(whole["message"]["id"], id.as_str());
    assert_eq!(whole["message"]["status"], "complete");
    assert_eq!(whole["message"]["text"], format!("Hi{sent}"));
    // The feed: the reply when it started, then finished.
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("complete") {
        let (name, data) = feed.next().await;
        assert_eq!(name, "message");
        assert_eq!(data["message"]["id"], id.as_str());
        statuses.push(data["message"]["status"].as_str().unwrap().to_owned());
    }
    if db.is_postgres() {
        assert_eq!(statuses, ["streaming", "complete"]);
    } else {
        // On SQLite the feed reads each new row after the poll finds it: a reply finished
        // before that poll is read once, finished.
        assert!(
            statuses == ["streaming", "complete"] || statuses == ["complete"],
            "{statuses:?}"
        );
    }

    // A handoff announced on A: its agent state reaches B's socket on PostgreSQL (by NOTIFY
    // only, as typing), its system message on both.
    let res = basic(pair.client.post(pair.a.url(&format!(
        "/rest/v1/agent/conversations/{conversation}/handoff"
    ))))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let mut seen = Vec::new();
    while !seen.contains(&"message".to_owned())
        || (db.is_postgres() && !seen.contains(&"agent_state".to_owned()))
    {
        let frame = on_b.next().await;
        if frame["type"] == "agent_state" {
            assert_eq!(frame["state"], "handoff");
        } else {
            assert_eq!(frame["message"]["sender"]["kind"], "system", "{frame}");
        }
        seen.push(frame["type"].as_str().unwrap().to_owned());
    }
}

/// Both instances run a webhook worker on one outbox: every event is sent once (a claim is
/// one instance's until its lease ends), and a conversation's events arrive in order.
#[tokio::test]
async fn two_instances_send_each_webhook_event_once_and_in_order() {
    use common::{ChatClient, WebhookReceiver};

    let db = TestDb::new().await;
    let pair = two_instances(&db).await;
    let mut rx = WebhookReceiver::start().await;
    let agent = pair.key["agentId"].as_str().unwrap();
    cli(
        &db.url,
        &[
            "agent",
            "update",
            agent,
            "--kind",
            "webhook",
            "--webhook-url",
            &rx.url,
        ],
    );

    const USERS: usize = 6;
    const EACH: usize = 10;
    let mut sockets = Vec::new();
    for u in 0..USERS {
        let on = if u % 2 == 0 { &pair.a } else { &pair.b };
        let minted = pair.mint(on, &format!("user-{u}")).await;
        let (mut socket, _) =
            ChatClient::ready(&on.ws_url(), minted["token"].as_str().unwrap()).await;
        socket.send(json!({"type": "open", "id": "o"})).await;
        let conversation = socket.next().await["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        sockets.push((socket, conversation));
    }
    for i in 0..EACH {
        for (socket, conversation) in &mut sockets {
            socket
                .send(json!({"type": "send", "conversationId": conversation,
                             "clientMessageId": format!("m{i}"), "text": format!("message {i}")}))
                .await;
        }
    }

    let mut seen = HashSet::new();
    let mut last_seq: std::collections::HashMap<String, i64> = Default::default();
    while seen.len() < USERS * (EACH + 1) {
        let d = rx.next_within(Duration::from_secs(10)).await;
        assert!(seen.insert(d.id().to_owned()), "{} sent twice", d.id());
        let event = d.json();
        let conversation = event["data"]["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let seq = event["data"]["message"]["seq"].as_i64().unwrap_or(0);
        let before = last_seq.insert(conversation, seq).unwrap_or(-1);
        assert!(seq > before, "{} after seq {before}: {event}", d.id());
    }
    assert!(
        rx.quiet_for(Duration::from_millis(2500)).await,
        "nothing more: every event was sent once"
    );
}
