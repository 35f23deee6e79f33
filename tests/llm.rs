//! The `openai` agent through the real server, against a local endpoint that streams as
//! OpenAI's does (chunked server-sent events, slow chunks, a cut connection, a 429 with
//! `Retry-After`, a 500, invalid JSON in a chunk); no network.

mod common;

use std::time::{Duration, Instant};

use common::{
    ChatClient, FakeLlm, LlmReply, Server, TestApp, audit_events_of, cli_json,
    cli_json_off_runtime, content, frames_until, is_state, say, spawn_app, user_socket,
};
use serde_json::{Value, json};

/// The test app with its agent made an `openai` agent of a fake endpoint by the CLI.
async fn llm_app(extra: &[&str]) -> (TestApp, FakeLlm) {
    let app = spawn_app().await;
    let llm = FakeLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, "You are Acme's support agent. Be brief.").unwrap();
    let mut args = vec![
        "agent",
        "update",
        &app.tenant.agent,
        "--kind",
        "openai",
        "--llm-base-url",
        &llm.base_url,
        "--llm-model",
        "acme-chat-1",
        "--system-prompt-file",
        prompt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let updated = cli_json_off_runtime(&app.test_db.url, &args).await;
    assert_eq!(updated["kind"], "openai", "{updated}");
    app.synced().await;
    (app, llm)
}

fn is_final_agent_message(f: &Value) -> bool {
    f["type"] == "message"
        && f["message"]["sender"]["kind"] == "agent"
        && f["message"]["status"] != "streaming"
}

async fn history(app: &TestApp, conversation: &str) -> Vec<Value> {
    let res = app
        .company_get(&format!(
            "/rest/v1/agent/conversations/{conversation}/messages"
        ))
        .await;
    res.json::<Value>().await.unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_reply_streams_to_the_user_coalesced_and_completes_with_its_usage() {
    let (app, mut llm) = llm_app(&["--llm-history", "5"]).await;
    // Chunks 10 ms apart: the first goes at once, the rest at most one per 50 ms.
    let words = [
        "Hel", "lo", ",", " I", " can", " help", " with", " that", ".",
    ];
    llm.reply([LlmReply::text(&words, Duration::from_millis(10))]);
    let (mut socket, conversation) = user_socket(&app, "ada").await;
    say(&mut socket, &conversation, "c1", "Can you help?").await;

    let request = llm.next().await;
    assert_eq!(
        request.body,
        json!({
            "model": "acme-chat-1",
            "messages": [
                {"role": "system", "content": "You are Acme's support agent. Be brief."},
                {"role": "user", "content": "Can you help?"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    assert!(
        request.headers.get("authorization").is_none(),
        "no key configured"
    );

    let frames = frames_until(&mut socket, is_final_agent_message).await;
    let thinking = frames.iter().position(|(_, f)| is_state(f, "thinking"));
    let started = frames
        .iter()
        .position(|(_, f)| f["type"] == "message" && f["message"]["status"] == "streaming")
        .expect("the reply starts as a streaming message");
    assert!(thinking.is_some_and(|t| t < started), "{frames:#?}");
    let id = frames[started].1["message"]["id"].clone();
    let mut text = frames[started].1["message"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let deltas: Vec<_> = frames
        .iter()
        .filter(|(_, f)| f["type"] == "delta")
        .collect();
    for (_, delta) in &deltas {
        assert_eq!(delta["messageId"], id);
        assert_eq!(delta["offset"], text.chars().count(), "{delta}");
        text.push_str(delta["text"].as_str().unwrap());
    }
    assert_eq!(text, words.concat(), "the deltas add up to the reply");
    assert!(
        deltas.len() < words.len() - 1,
        "coalesced: {} deltas for {} chunks",
        deltas.len(),
        words.len() - 1
    );
    // The reply's message starts empty when the endpoint answers; its words come as deltas.
    assert_eq!(frames[started].1["message"]["text"], "", "{frames:#?}");
    let pushed: Vec<Instant> = deltas.iter().map(|(at, _)| *at).collect();
    for pair in pushed.windows(2) {
        // The socket reads them as they come; a little slack for this machine's scheduler.
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(35),
            "deltas at most one per 50 ms: {:?}",
            pair[1] - pair[0]
        );
    }
    let last = &frames.last().unwrap().1["message"];
    assert_eq!(last["id"], id);
    assert_eq!(last["status"], "complete");
    assert_eq!(last["text"], words.concat());
    let usage = json!({"promptTokens": 11, "completionTokens": 9});
    assert_eq!(
        last["usage"], usage,
        "the final message has the token usage"
    );
    let stored = history(&app, &conversation).await;
    let reply = stored.iter().find(|m| m["id"] == id).unwrap();
    assert_eq!(reply["usage"], usage, "{reply}");
    let asked = stored
        .iter()
        .find(|m| m["sender"]["kind"] == "user")
        .unwrap();
    assert!(
        asked.get("usage").is_none(),
        "only replies with a usage have one: {asked}"
    );

    let replies = audit_events_of(&app, "llm.reply", 1).await;
    assert_eq!(replies[0]["outcome"], "ok");
    let detail = replies[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("11 prompt and 9 completion tokens"),
        "{detail}"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"performchat_llm_tokens_total{name="completion"} 9"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_socket_that_connects_mid_reply_sees_the_text_so_far_then_the_rest() {
    let (app, mut llm) = llm_app(&[]).await;
    llm.reply([LlmReply::text(
        &["One", " two", " three", " four"],
        Duration::from_millis(300),
    )]);
    let token = app.token_for("grace").await;
    let (mut first, conversation) = user_socket(&app, "grace").await;
    say(&mut first, &conversation, "c1", "Count").await;
    llm.next().await;
    // The reply has started: a second socket of the user joins now.
    frames_until(&mut first, |f| {
        f["type"] == "message" && f["message"]["status"] == "streaming"
    })
    .await;
    // 400 ms in: two words pushed, none stored yet (a reply is stored every 500 ms), so
    // what a reader gets now comes from what was pushed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let read = history(&app, &conversation).await;
    let mid = read
        .iter()
        .find(|m| m["sender"]["kind"] == "agent")
        .unwrap();
    assert!(mid["text"].as_str().unwrap().starts_with("One"), "{mid}");
    let (mut late, _) = ChatClient::ready(&app.ws_url(), &token).await;
    late.send(json!({"type": "open", "id": "o"})).await;
    let opened = late.next().await;
    let so_far = opened["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sender"]["kind"] == "agent")
        .expect("the reply so far is in the conversation")
        .clone();
    assert_eq!(so_far["status"], "streaming");
    let mut text = so_far["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("One") && text != "One two three four",
        "{text}"
    );
    loop {
        let frame = late.next().await;
        if frame["type"] == "delta" {
            // As the protocol says: keep only what is past the copy (the socket may have read
            // the reply just after this chunk was stored, before its push came).
            let offset = frame["offset"].as_u64().unwrap() as usize;
            let have = text.chars().count();
            assert!(
                offset <= have,
                "a gap: the copy has {have}, the delta starts at {offset}"
            );
            text.extend(frame["text"].as_str().unwrap().chars().skip(have - offset));
        }
        if is_final_agent_message(&frame) {
            assert_eq!(frame["message"]["text"], "One two three four");
            break;
        }
    }
    assert_eq!(text, "One two three four", "no gap and no repeat");
}

#[tokio::test]
async fn a_message_sent_while_a_reply_streams_is_answered_after_it_in_order() {
    let (app, mut llm) = llm_app(&[]).await;
    llm.reply([
        LlmReply::text(&["First", " answer"], Duration::from_millis(400)),
        LlmReply::text(&["Second answer"], Duration::ZERO),
    ]);
    let (mut socket, conversation) = user_socket(&app, "linus").await;
    say(&mut socket, &conversation, "c1", "Question one").await;
    llm.next().await;
    frames_until(&mut socket, |f| {
        f["type"] == "message" && f["message"]["status"] == "streaming"
    })
    .await;
    say(&mut socket, &conversation, "c2", "Question two").await;
    assert!(
        llm.quiet_for(Duration::from_millis(250)).await,
        "not asked while the first reply streams"
    );
    let second = llm.next().await;
    assert_eq!(
        second.body["messages"],
        json!([
            {"role": "system", "content": "You are Acme's support agent. Be brief."},
            {"role": "user", "content": "Question one"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Question two"},
        ])
    );
    let mut finals = 0;
    while finals < 2 {
        if is_final_agent_message(&socket.next().await) {
            finals += 1;
        }
    }
    let texts: Vec<_> = history(&app, &conversation)
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Question one",
            "First answer",
            "Question two",
            "Second answer"
        ]
    );
}

#[tokio::test]
async fn failures_end_the_reply_failed_with_its_text_and_hand_the_user_to_a_person() {
    let (app, llm) = llm_app(&[]).await;
    let cut = LlmReply::Stream {
        pieces: vec![
            (Duration::ZERO, content("Partial")),
            (Duration::from_millis(60), content(" answer")),
        ],
        cut: true,
    };
    let bad_json = LlmReply::Stream {
        pieces: vec![
            (Duration::ZERO, content("Half")),
            (
                Duration::from_millis(60),
                "data: {\"choices\": [\n\n".to_owned(),
            ),
        ],
        cut: false,
    };
    llm.reply([cut, bad_json, LlmReply::Status(500, None)]);
    for (user, kept) in [
        ("u-cut", Some("Partial answer")),
        ("u-json", Some("Half")),
        ("u-500", None),
    ] {
        let (mut socket, conversation) = user_socket(&app, user).await;
        say(&mut socket, &conversation, "c1", "Hello").await;
        let frames = frames_until(&mut socket, |f| {
            f["type"] == "message" && f["message"]["sender"]["kind"] == "system"
        })
        .await;
        let failed = frames.iter().find(|(_, f)| {
            f["type"] == "message"
                && f["message"]["sender"]["kind"] == "agent"
                && f["message"]["status"] == "failed"
        });
        assert_eq!(
            failed.map(|(_, f)| f["message"]["text"].as_str().unwrap()),
            kept,
            "{user}: {frames:#?}"
        );
        let error = frames.iter().position(|(_, f)| is_state(f, "error"));
        let handoff = frames.iter().position(|(_, f)| is_state(f, "handoff"));
        assert!(error.is_some() && handoff > error, "{user}: {frames:#?}");
    }
    let replies = audit_events_of(&app, "llm.reply", 3).await;
    let mut outcomes: Vec<_> = replies
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["http_5xx", "invalid_stream", "request"]);
}

#[tokio::test]
async fn without_handoff_on_failure_the_agent_keeps_the_conversation() {
    let (app, llm) = llm_app(&["--handoff-on-failure", "false", "--llm-timeout", "1s"]).await;
    // The stream stalls after its first words: the timeout ends it.
    llm.reply([LlmReply::Stream {
        pieces: vec![
            (Duration::ZERO, content("Thinking")),
            (Duration::from_secs(4), content("…")),
        ],
        cut: false,
    }]);
    let (mut socket, conversation) = user_socket(&app, "barbara").await;
    say(&mut socket, &conversation, "c1", "Hello").await;
    let frames = frames_until(&mut socket, |f| is_state(f, "error")).await;
    let failed = frames
        .iter()
        .find(|(_, f)| f["type"] == "message" && f["message"]["status"] == "failed")
        .expect("the reply failed");
    assert_eq!(failed.1["message"]["text"], "Thinking");
    let stalled = audit_events_of(&app, "llm.reply", 1).await;
    assert_eq!(stalled[0]["outcome"], "timeout");
    let res = app
        .company_get("/rest/v1/agent/conversations?status=waiting_human")
        .await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["conversations"],
        json!([])
    );
}

#[tokio::test]
async fn a_429_is_asked_again_after_its_retry_after() {
    let (app, mut llm) = llm_app(&[]).await;
    llm.reply([
        LlmReply::Status(429, Some(20)),
        LlmReply::text(&["Back again"], Duration::ZERO),
    ]);
    let (mut socket, conversation) = user_socket(&app, "margaret").await;
    say(&mut socket, &conversation, "c1", "Hello").await;
    llm.next().await;
    assert!(
        llm.quiet_for(Duration::from_millis(1500)).await,
        "not before Retry-After"
    );
    app.advance_clock(Duration::from_secs(20)).await;
    llm.next().await;
    let frames = frames_until(&mut socket, is_final_agent_message).await;
    assert_eq!(frames.last().unwrap().1["message"]["text"], "Back again");
    assert!(
        !frames.iter().any(|(_, f)| is_state(f, "error")),
        "{frames:#?}"
    );
}

#[tokio::test]
async fn a_reply_longer_than_a_message_goes_on_in_the_next() {
    let (app, llm) = llm_app(&[]).await;
    let long = "x".repeat(3000);
    llm.reply([LlmReply::text(&[&long, &long], Duration::from_millis(60))]);
    let (mut socket, conversation) = user_socket(&app, "hedy").await;
    say(&mut socket, &conversation, "c1", "Tell me everything").await;
    let mut finals = Vec::new();
    while finals.len() < 2 {
        let f = socket.next().await;
        if is_final_agent_message(&f) {
            finals.push(f);
        }
    }
    assert_eq!(finals[0]["message"]["text"].as_str().unwrap().len(), 4000);
    assert_eq!(finals[1]["message"]["text"].as_str().unwrap().len(), 2000);
    assert!(finals.iter().all(|f| f["message"]["status"] == "complete"));
}

/// The real binary: the key is read from the server's environment variable named by
/// `--llm-api-key-env`, sent as a bearer token, and never stored or logged.
#[tokio::test]
async fn the_api_key_comes_from_the_servers_environment_and_is_never_logged() {
    let db = common::TestDb::new().await;
    let url = db.url.clone();
    common::create_acme(&url);
    let mut llm = FakeLlm::start().await;
    let agent = cli_json(
        &url,
        &[
            "agent",
            "create",
            "--company",
            "company_acme",
            "--name",
            "Assistant",
            "--kind",
            "openai",
            "--llm-base-url",
            &llm.base_url,
            "--llm-model",
            "acme-chat-1",
            "--llm-api-key-env",
            "ACME_LLM_KEY",
        ],
    );
    assert_eq!(agent["llmApiKeyEnv"], "ACME_LLM_KEY");
    let key = cli_json(&url, &["key", "create", "--company", "company_acme"]);
    const SECRET: &str = "sk-test-5a1e2f9d0c";
    let env = [("ACME_LLM_KEY", SECRET), ("PERFORMCHAT_LOG", "debug")];
    let mut server = Server::start_with_env(&url, &[], &env);
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
    llm.reply([LlmReply::text(&["Hi"], Duration::ZERO)]);
    let token = minted["token"].as_str().unwrap();
    let (mut socket, _) = ChatClient::ready(&server.ws_url(), token).await;
    socket.send(json!({"type": "open", "id": "o"})).await;
    let conversation = socket.next().await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    say(&mut socket, &conversation, "c1", "Hello").await;
    let request = llm.next().await;
    assert_eq!(request.headers["authorization"], format!("Bearer {SECRET}"));
    frames_until(&mut socket, is_final_agent_message).await;
    server.kill();
    let logs: Vec<String> = server.logs.try_iter().collect();
    assert!(!logs.is_empty());
    assert!(
        !logs.iter().any(|l| l.contains(SECRET)),
        "the key is never logged"
    );
    if !db.is_postgres() {
        let file = url.trim_start_matches("sqlite://");
        for path in [file.to_owned(), format!("{file}-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the key is never stored ({path})"
            );
        }
    }
}

#[tokio::test]
async fn the_cli_says_what_an_openai_agent_needs() {
    let app = spawn_app().await;
    let url = app.test_db.url.clone();
    let agent = app.tenant.agent.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let refused = |args: &[&str]| {
            let out = common::performchat(&url).args(args).output().unwrap();
            assert!(!out.status.success(), "{args:?}");
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let missing = refused(&["agent", "update", &agent, "--kind", "openai"]);
        let no_model = refused(&[
            "agent",
            "update",
            &agent,
            "--kind",
            "openai",
            "--llm-base-url",
            "http://127.0.0.1:11434/v1",
        ]);
        let not_openai = refused(&["agent", "update", &agent, "--llm-model", "llama3.2"]);
        let bad_env = refused(&[
            "agent",
            "update",
            &agent,
            "--kind",
            "openai",
            "--llm-base-url",
            "http://127.0.0.1:11434/v1",
            "--llm-model",
            "llama3.2",
            "--llm-api-key-env",
            "sk-not-a-name",
        ]);
        common::cli(
            &url,
            &[
                "agent",
                "update",
                &agent,
                "--kind",
                "openai",
                "--llm-base-url",
                "http://127.0.0.1:11434/v1",
                "--llm-model",
                "llama3.2",
            ],
        );
        let listed = common::cli(&url, &["agent", "list", "--company", "company_xyz"]);
        (missing, no_model, not_openai, bad_env, listed)
    })
    .await
    .unwrap();
    assert!(outcome.0.contains("needs --llm-base-url"), "{}", outcome.0);
    assert!(outcome.1.contains("needs --llm-model"), "{}", outcome.1);
    assert!(outcome.2.contains("add --kind openai"), "{}", outcome.2);
    assert!(
        outcome.3.contains("name of an environment variable"),
        "{}",
        outcome.3
    );
    assert!(
        outcome
            .4
            .contains("\topenai\tSupport Agent\t(default)\tllama3.2 at http://127.0.0.1:11434/v1"),
        "{}",
        outcome.4
    );
}
