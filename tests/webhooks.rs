//! The `webhook` agent through the real server: events of a webhook agent's conversations
//! reach a local endpoint signed as Standard Webhooks specifies (checked with the
//! `standardwebhooks` crate, an implementation we did not write), its answers reach the
//! user, failures are retried with the same id and end with a person, a 410 disables the
//! webhook, rolled secrets sign side by side, and a delivery cut by `kill -9` is made again.

mod common;

use std::time::Duration;

use common::{
    Answer, ChatClient, Delivery, Server, TestApp, WebhookReceiver, assert_error, audit_events_of,
    cli_json, cli_json_off_runtime, cli_off_runtime, frames_until, is_message_from, is_state, say,
    spawn_app, user_socket,
};
use serde_json::{Value, json};

/// The test app with its agent made a webhook agent by the CLI, pointed at a receiver.
struct Bot {
    app: TestApp,
    rx: WebhookReceiver,
    secret: String,
}

async fn bot_app() -> Bot {
    let app = spawn_app().await;
    let rx = WebhookReceiver::start().await;
    let agent = &app.tenant.agent;
    let updated = cli_json_off_runtime(
        &app.test_db.url,
        &[
            "agent",
            "update",
            agent,
            "--kind",
            "webhook",
            "--webhook-url",
            &rx.url,
        ],
    )
    .await;
    assert_eq!(updated["kind"], "webhook");
    assert_eq!(updated["webhookUrl"], rx.url.as_str());
    let secret = updated["webhookSecret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{updated}");
    app.synced().await;
    Bot { app, rx, secret }
}

/// Verifies a delivery as any Standard Webhooks receiver would.
fn verify(secret: &str, d: &Delivery) {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&d.body, &d.headers)
        .unwrap_or_else(|e| panic!("{e:?}: {:?}", d.headers));
}

#[tokio::test]
async fn a_users_message_reaches_the_bot_signed_and_its_answer_reaches_the_user() {
    let mut bot = bot_app().await;
    bot.rx.answer([
        Answer::Status(200, json!({})),
        Answer::Status(
            200,
            json!({"replies": [{"text": "Let me check."}, {"text": "It ships today."}]}),
        ),
    ]);
    let (mut socket, conversation) = user_socket(&bot.app, "ada").await;

    let opened = bot.rx.next().await;
    verify(&bot.secret, &opened);
    let event = opened.json();
    assert_eq!(event["type"], "conversation.opened");
    assert_eq!(event["data"]["conversation"]["id"], conversation.as_str());
    assert_eq!(event["data"]["user"]["externalId"], "ada");
    assert_eq!(event["data"]["agent"]["name"], "Support Agent");
    assert!(event["data"].get("message").is_none(), "{event}");

    say(&mut socket, &conversation, "c1", "Where is my order?").await;
    let created = bot.rx.next().await;
    verify(&bot.secret, &created);
    let event = created.json();
    assert_eq!(event["type"], "message.created");
    assert!(common::is_recent_wire_time(&event["timestamp"]), "{event}");
    let message = &event["data"]["message"];
    assert_eq!(message["text"], "Where is my order?");
    assert_eq!(message["clientMessageId"], "c1");
    assert_eq!(message["sender"]["kind"], "user");
    assert_eq!(
        event["data"]["user"]["id"],
        event["data"]["conversation"]["userId"]
    );
    assert_ne!(created.id(), opened.id(), "each event its own webhook-id");
    assert_eq!(created.headers["content-type"], "application/json");

    // The user sees their message, the agent thinking, then both replies in order.
    let frames = frames_until(&mut socket, |f| {
        is_message_from(f, "agent") && f["message"]["text"] == "It ships today."
    })
    .await;
    let thinking = frames.iter().position(|(_, f)| is_state(f, "thinking"));
    let first = frames
        .iter()
        .position(|(_, f)| is_message_from(f, "agent"))
        .unwrap();
    assert!(thinking.is_some_and(|t| t < first), "{frames:#?}");
    assert_eq!(frames[first].1["message"]["text"], "Let me check.");
    assert_eq!(
        frames[first].1["message"]["sender"]["name"],
        "Support Agent"
    );
    assert_eq!(
        frames[first].1["message"]["clientMessageId"],
        format!("{}.0", created.id())
    );

    let attempts = audit_events_of(&bot.app, "webhook.attempt", 2).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert!(
        attempts.iter().all(|e| e["outcome"] == "ok"),
        "{attempts:#?}"
    );
    let metrics = bot
        .app
        .client
        .get(bot.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"performchat_webhook_attempts_total{name="delivered"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("performchat_webhook_delivery_seconds_count 2"));

    // Closing tells the bot too.
    let res = bot
        .app
        .client
        .post(bot.app.url(&format!(
            "/rest/v1/agent/conversations/{conversation}/close"
        )))
        .basic_auth(&bot.app.tenant.key_id, Some(&bot.app.tenant.key_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let closed = bot.rx.next().await;
    verify(&bot.secret, &closed);
    assert_eq!(closed.json()["type"], "conversation.closed");
    assert_eq!(closed.json()["data"]["conversation"]["status"], "closed");
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_the_same_id_then_a_person_takes_over() {
    let mut bot = bot_app().await;
    bot.rx.answer([Answer::Status(200, json!({}))]);
    let (mut socket, conversation) = user_socket(&bot.app, "grace").await;
    bot.rx.next().await;
    bot.rx
        .answer((0..6).map(|_| Answer::Status(503, json!({"error": "down"}))));
    say(&mut socket, &conversation, "c1", "Hello?").await;

    let first = bot.rx.next().await;
    verify(&bot.secret, &first);
    // Retries 5 s, 30 s, 2 min, 10 min and 1 h after each failure, by the server's clock.
    for wait_s in [5, 30, 120, 600, 3600] {
        assert!(
            bot.rx.quiet_for(Duration::from_millis(1500)).await,
            "no retry before its time"
        );
        bot.app.advance_clock(Duration::from_secs(wait_s)).await;
        let again = bot.rx.next().await;
        assert_eq!(
            again.id(),
            first.id(),
            "the same webhook-id on every attempt"
        );
        assert_eq!(again.body, first.body, "the same body on every attempt");
        assert_ne!(
            again.headers["webhook-timestamp"], first.headers["webhook-timestamp"],
            "each attempt signed at its own time"
        );
    }

    // After the last one the user is told, and the conversation waits for a person.
    let frames = frames_until(&mut socket, |f| is_message_from(f, "system")).await;
    let error = frames.iter().position(|(_, f)| is_state(f, "error"));
    let handoff = frames.iter().position(|(_, f)| is_state(f, "handoff"));
    assert!(error.is_some_and(|e| handoff > Some(e)), "{frames:#?}");
    let told = frames.last().unwrap().1["message"]["text"]
        .as_str()
        .unwrap();
    assert!(told.contains("connected to a person"), "{told}");
    let res = bot
        .app
        .company_get("/rest/v1/agent/conversations?status=waiting_human")
        .await;
    let waiting = res.json::<Value>().await.unwrap();
    assert_eq!(waiting["conversations"][0]["id"], conversation.as_str());

    let attempts: Vec<_> = audit_events_of(&bot.app, "webhook.attempt", 7)
        .await
        .into_iter()
        .filter(|e| e["detail"].as_str().unwrap().starts_with(first.id()))
        .collect();
    assert_eq!(attempts.len(), 6, "{attempts:#?}");
    assert!(attempts.iter().all(|e| e["outcome"] == "http_5xx"));
    assert!(
        bot.rx.quiet_for(Duration::from_millis(1500)).await,
        "given up"
    );
}

#[tokio::test]
async fn a_410_disables_the_webhook_until_its_url_is_set_again() {
    let mut bot = bot_app().await;
    bot.rx.answer([
        Answer::Status(200, json!({})),
        Answer::Status(410, json!({})),
    ]);
    let (mut socket, conversation) = user_socket(&bot.app, "linus").await;
    bot.rx.next().await;
    say(&mut socket, &conversation, "c1", "Anyone there?").await;
    bot.rx.next().await;
    let frames = frames_until(&mut socket, |f| is_message_from(f, "system")).await;
    assert!(
        frames.iter().any(|(_, f)| is_state(f, "error")),
        "{frames:#?}"
    );
    assert!(
        frames.iter().any(|(_, f)| is_state(f, "handoff")),
        "{frames:#?}"
    );

    let agents = cli_json_off_runtime(
        &bot.app.test_db.url,
        &["agent", "list", "--company", &bot.app.tenant.company],
    )
    .await;
    assert!(agents[0]["webhookDisabledAt"].is_string(), "{agents}");
    let listed = cli_off_runtime(
        &bot.app.test_db.url,
        &["agent", "list", "--company", &bot.app.tenant.company],
    )
    .await;
    assert!(listed.contains("disabled"), "{listed}");
    assert_eq!(
        audit_events_of(&bot.app, "agent.webhook_disabled", 1)
            .await
            .len(),
        1
    );

    // Disabled: nothing is queued or sent.
    say(&mut socket, &conversation, "c2", "Hello?").await;
    assert!(bot.rx.quiet_for(Duration::from_millis(1500)).await);

    // Set again, it hears of the next message, though a person handles the conversation:
    // the bot's answer is not delivered, and its REST reply is refused.
    cli_off_runtime(
        &bot.app.test_db.url,
        &[
            "agent",
            "update",
            &bot.app.tenant.agent,
            "--webhook-url",
            &bot.rx.url,
        ],
    )
    .await;
    bot.rx.answer([Answer::Status(
        200,
        json!({"replies": [{"text": "I am the bot"}]}),
    )]);
    say(&mut socket, &conversation, "c3", "Still there?").await;
    let event = bot.rx.next().await;
    verify(&bot.secret, &event);
    assert_eq!(event.json()["data"]["message"]["text"], "Still there?");
    let ignored = audit_events_of(&bot.app, "webhook.answer_ignored", 1).await;
    assert_eq!(ignored[0]["outcome"], "not_delivered");
    let res = bot
        .app
        .client
        .post(bot.app.url(&format!(
            "/rest/v1/agent/conversations/{conversation}/messages"
        )))
        .basic_auth(&bot.app.tenant.key_id, Some(&bot.app.tenant.key_secret))
        .json(&json!({"text": "Bot again"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "handled_by_person", "a person handles").await;
    let history = bot
        .app
        .company_get(&format!(
            "/rest/v1/agent/conversations/{conversation}/messages"
        ))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let texts: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(!texts.iter().any(|t| t.contains("bot")), "{texts:?}");
}

#[tokio::test]
async fn rolled_secrets_sign_side_by_side_until_the_old_ones_expire() {
    let mut bot = bot_app().await;
    let rolled = cli_json_off_runtime(
        &bot.app.test_db.url,
        &[
            "agent",
            "roll-webhook-secret",
            &bot.app.tenant.agent,
            "--expire-old-in",
            "1h",
        ],
    )
    .await;
    let new = rolled["webhookSecret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != bot.secret, "{rolled}");

    let (_socket, _) = user_socket(&bot.app, "margaret").await;
    let both = bot.rx.next().await;
    let signatures = both.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    verify(&bot.secret, &both);
    verify(&new, &both);

    bot.app.advance_clock(Duration::from_secs(3600 + 1)).await;
    let (_socket, _) = user_socket(&bot.app, "barbara").await;
    let one = bot.rx.next().await;
    let signatures = one.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 1, "{signatures}");
    let old_fails = standardwebhooks::Webhook::new(&bot.secret)
        .unwrap()
        .verify(&one.body, &one.headers);
    assert!(old_fails.is_err(), "the old secret no longer signs");
}

#[tokio::test]
async fn the_cli_refuses_a_webhook_agent_without_a_url_and_a_url_for_a_human_agent() {
    let app = spawn_app().await;
    let url = &app.test_db.url;
    let agent = &app.tenant.agent;
    for (args, says) in [
        (
            vec!["agent", "update", agent, "--kind", "webhook"],
            "needs --webhook-url",
        ),
        (
            vec![
                "agent",
                "update",
                agent,
                "--webhook-url",
                "https://bot.example.com/",
            ],
            "add --kind webhook",
        ),
        (
            vec![
                "agent",
                "update",
                agent,
                "--kind",
                "webhook",
                "--webhook-url",
                "ftp://x/",
            ],
            "http or https",
        ),
        (
            vec!["agent", "roll-webhook-secret", agent],
            "has no webhook",
        ),
    ] {
        let out = common::performchat(url).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let created = cli_json_off_runtime(
        url,
        &[
            "agent",
            "create",
            "--company",
            &app.tenant.company,
            "--name",
            "Bot",
            "--kind",
            "webhook",
            "--webhook-url",
            "https://bot.example.com/hook",
        ],
    )
    .await;
    assert_eq!(created["kind"], "webhook");
    assert!(
        created["webhookSecret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let listed = cli_off_runtime(url, &["agent", "list", "--company", &app.tenant.company]).await;
    assert!(listed.contains("\thuman\tSupport Agent"), "{listed}");
    assert!(
        listed.contains("\twebhook\tBot\thttps://bot.example.com/hook"),
        "{listed}"
    );
    assert!(!listed.contains("whsec_"), "a secret is shown once only");
}

/// The real binary, killed (SIGKILL) while a delivery is in flight: the restarted server sends
/// the event again once its claim lapses, with the same `webhook-id`, and the bot's answer
/// reaches the user.
#[tokio::test]
async fn a_delivery_cut_by_kill_9_is_made_again_after_a_restart() {
    let db = common::TestDb::new().await;
    let url = db.url.clone();
    common::create_acme(&url);
    let mut rx = WebhookReceiver::start().await;
    cli_json(
        &url,
        &[
            "agent",
            "create",
            "--company",
            "company_acme",
            "--name",
            "Bot",
            "--id",
            "agent_bot",
            "--kind",
            "webhook",
            "--webhook-url",
            &rx.url,
        ],
    );
    let key = cli_json(&url, &["key", "create", "--company", "company_acme"]);
    let args = ["--webhook-timeout", "1s"];
    let mut server = Server::start(&url, &args);
    let client = reqwest::Client::new();
    let minted: Value = client
        .post(server.url("/rest/v1/auth/token"))
        .json(&json!({"keyId": key["keyId"], "keySecret": key["keySecret"], "userId": "ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    rx.answer([Answer::Status(200, json!({})), Answer::Hang]);
    let (mut socket, _) = ChatClient::ready(&server.ws_url(), &token).await;
    socket.send(json!({"type": "open", "id": "o"})).await;
    let conversation = socket.next().await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rx.next().await;
    say(&mut socket, &conversation, "c1", "Are you there?").await;
    let cut = rx.next().await;
    assert_eq!(cut.json()["type"], "message.created");
    server.kill();

    rx.answer([Answer::Status(
        200,
        json!({"replies": [{"text": "Yes, here."}]}),
    )]);
    let server = Server::start(&url, &args);
    // The claim lapses 1 s (the timeout) + 5 s after it was made.
    let again = rx.next_within(Duration::from_secs(15)).await;
    assert_eq!(again.id(), cut.id());
    assert_eq!(
        again.json()["data"]["message"],
        cut.json()["data"]["message"]
    );
    let (mut socket, _) = ChatClient::ready(&server.ws_url(), &token).await;
    socket
        .send(json!({"type": "history", "id": "h", "conversationId": conversation, "after": 0}))
        .await;
    let mut texts = Vec::new();
    for _ in 0..50 {
        let frame = socket.next().await;
        if frame["type"] == "history" {
            texts = frame["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_owned())
                .collect();
            if texts.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            socket
                .send(json!({"type": "history", "id": "h", "conversationId": conversation, "after": 0}))
                .await;
        }
    }
    assert_eq!(texts, ["Are you there?", "Yes, here."]);
}

/// The README's bot (Python, standard library only) run as written: its own verification of
/// our signatures (an implementation of the spec we did not write in Rust) lets our requests
/// in and refuses a forged one, and its answer reaches the user.
#[tokio::test]
async fn the_readmes_python_bot_verifies_our_requests_and_answers() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marked = &readme[readme
        .find("<!-- webhook-receiver")
        .expect("the marked bot")..];
    let code = &marked[marked.find("```python\n").unwrap() + "```python\n".len()..];
    let code = &code[..code.find("```").unwrap()];
    let lines = code.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 20, "the README promises 20 lines: {lines}");
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is needed to run the README's webhook bot (apt-get install python3)"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bot.py");
    std::fs::write(&script, code).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bot_url = format!("http://127.0.0.1:{port}/");

    let app = spawn_app().await;
    let updated = cli_json_off_runtime(
        &app.test_db.url,
        &[
            "agent",
            "update",
            &app.tenant.agent,
            "--kind",
            "webhook",
            "--webhook-url",
            &bot_url,
        ],
    )
    .await;
    let secret = updated["webhookSecret"].as_str().unwrap();
    let child = std::process::Command::new("python3")
        .arg(&script)
        .env("WEBHOOK_SECRET", secret)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _bot = Killed(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let forged = app
        .client
        .post(&bot_url)
        .header("webhook-id", "evt_forged")
        .header("webhook-timestamp", app.clock.now_ms() / 1000)
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .body(r#"{"type":"message.created"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "the bot refuses what we did not sign");

    let (mut socket, conversation) = user_socket(&app, "alan").await;
    say(&mut socket, &conversation, "c1", "ping?").await;
    let frames = frames_until(&mut socket, |f| is_message_from(f, "agent")).await;
    assert_eq!(
        frames.last().unwrap().1["message"]["text"],
        "You said: ping?"
    );
    let attempts = audit_events_of(&app, "webhook.attempt", 2).await;
    assert!(
        attempts.iter().all(|e| e["outcome"] == "ok"),
        "{attempts:#?}"
    );
}

#[tokio::test]
async fn a_bot_that_answers_handoff_hands_the_conversation_to_a_person() {
    let mut bot = bot_app().await;
    bot.rx.answer([
        Answer::Status(200, json!({})),
        Answer::Status(
            200,
            json!({"replies": [{"text": "A colleague will take over."}], "handoff": true}),
        ),
    ]);
    let (mut socket, conversation) = user_socket(&bot.app, "katherine").await;
    bot.rx.next().await;
    say(&mut socket, &conversation, "c1", "I want a refund").await;
    bot.rx.next().await;
    let frames = frames_until(&mut socket, |f| is_message_from(f, "system")).await;
    let reply = frames
        .iter()
        .position(|(_, f)| is_message_from(f, "agent"))
        .expect("the bot's reply");
    let handoff = frames.iter().position(|(_, f)| is_state(f, "handoff"));
    assert!(
        handoff > Some(reply),
        "its reply, then the handoff: {frames:#?}"
    );
    let res = bot
        .app
        .company_get("/rest/v1/agent/conversations?status=waiting_human")
        .await;
    let waiting = res.json::<Value>().await.unwrap();
    assert_eq!(waiting["conversations"][0]["id"], conversation.as_str());
    assert_eq!(waiting["conversations"][0]["handler"], "waiting_human");
}
