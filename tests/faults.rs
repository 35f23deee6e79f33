//! Storage faults through the real server: a full disk (SQLite on a small tmpfs) or a
//! database that refuses writes (PostgreSQL with `default_transaction_read_only`). Every write
//! path (new users by group commit, the audit writer, the change log, the CLI) is refused
//! cleanly (503 `unavailable` with Retry-After, never 500; readiness says so), nothing
//! answered before is lost, and every path works again by itself once the cause is gone.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{TestApp, TestDb, assert_error, performchat, spawn_app_on};
use performchat::config::Settings;
use serde_json::json;

/// A fault the test can start and end while the server runs.
enum Fault {
    /// A tmpfs holding the SQLite file, and a file that fills what is left of it.
    FullDisk {
        mount: PathBuf,
        filler: PathBuf,
    },
    ReadOnly,
}

impl Fault {
    async fn start(&self, app: &TestApp) {
        match self {
            Fault::FullDisk { filler, .. } => {
                use std::io::Write as _;
                let mut f = std::fs::File::create(filler).unwrap();
                let chunk = vec![0u8; 64 * 1024];
                while f.write_all(&chunk).is_ok() {}
                // Single bytes too: nothing left at all.
                while f.write_all(&[0]).is_ok() {}
            }
            Fault::ReadOnly => {
                app.test_db
                    .postgres_admin("ALTER DATABASE {db} SET default_transaction_read_only = on")
                    .await;
                // Existing sessions keep the old default: end them; the pools reconnect.
                app.test_db
                    .postgres_admin(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{db}' AND pid <> pg_backend_pid()",
                    )
                    .await;
            }
        }
    }

    async fn end(&self, app: &TestApp) {
        match self {
            Fault::FullDisk { filler, .. } => std::fs::remove_file(filler).unwrap(),
            Fault::ReadOnly => {
                app.test_db
                    .postgres_admin("ALTER DATABASE {db} SET default_transaction_read_only = off")
                    .await;
            }
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Fault::FullDisk { mount, .. } = self {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&*mount)
                .status();
        }
    }
}

/// SQLite on a 4 MiB tmpfs of the test's own (mounting needs root; CI runs as root and
/// must run this test, elsewhere it says why it did not run).
fn small_filesystem(dir: &std::path::Path) -> Option<PathBuf> {
    let mount = dir.join("fs");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        Some(mount)
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot mount a tmpfs for the full-disk test: CI must run it as root");
    } else {
        eprintln!("NOT RUN: the full-disk test needs root to mount a small tmpfs");
        None
    }
}

async fn post_bearer(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn readyz(app: &TestApp) -> u16 {
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    res.status().as_u16()
}

/// Polls `f` until it gives 200, for at most 10 s; returns the last status.
async fn until_ok<F, Fut>(mut f: F) -> u16
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut status = 0;
    for _ in 0..100 {
        status = f().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

/// Runs a CLI command off the test's runtime (which is the server's) and returns whether it
/// succeeded, with its stderr.
async fn cli_outcome(url: &str, args: &[&str]) -> (bool, String) {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = performchat(&url).args(&args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_storage_fault_refuses_every_write_cleanly_and_writes_recover_by_themselves() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let (test_db, fault) = if std::env::var(common::POSTGRES_ENV).is_ok_and(|v| !v.is_empty()) {
        (TestDb::new().await, Fault::ReadOnly)
    } else {
        let Some(mount) = small_filesystem(dir.path()) else {
            return;
        };
        let filler = mount.join("filler");
        (TestDb::sqlite_in(&mount), Fault::FullDisk { mount, filler })
    };
    let settings = Settings {
        chat_send_rate: 0,
        ..Default::default()
    };
    let app = spawn_app_on(test_db, settings).await;
    let before = app.mint_ok("before-the-fault").await;
    let token = before["token"].as_str().unwrap().to_owned();
    let chatter = app.token_for("chatter").await;
    let conversation = post_bearer(&app, &chatter, "/rest/v1/chat/conversations", None).await;
    assert_eq!(conversation.status(), 200);
    let conversation: serde_json::Value = conversation.json().await.unwrap();
    let messages = format!(
        "/rest/v1/chat/conversations/{}/messages",
        conversation["conversation"]["id"].as_str().unwrap()
    );
    let send = |i: usize| {
        post_bearer(
            &app,
            &chatter,
            &messages,
            Some(json!({"clientMessageId": format!("m{i}"), "text": "still there?"})),
        )
    };

    fault.start(&app).await;
    // New users, until the group commit cannot write (SQLite may still fit a few in its
    // log): every answer is 200 or 503, never 500.
    let mut refused = None;
    for i in 0..5000 {
        let res = app.mint(json!({"userId": format!("during-{i}")})).await;
        match res.status().as_u16() {
            200 => continue,
            503 => {
                refused = Some(res);
                break;
            }
            other => panic!(
                "a new user during the fault got {other}: {}",
                res.text().await.unwrap()
            ),
        }
    }
    let refused = refused.expect("writes were refused during the fault");
    assert_eq!(refused.headers()["retry-after"], "2");
    assert_error(refused, 503, "unavailable", "retry").await;
    assert_eq!(readyz(&app).await, 503, "readiness reports the writer");

    // The change log's path (invalidation), the CLI's.
    let res = app
        .invalidate(&app.tenant, json!({"externalId": "before-the-fault"}))
        .await;
    assert_error(res, 503, "unavailable", "retry").await;
    let (ok, stderr) =
        cli_outcome(&app.test_db.url, &["company", "create", "--name", "During"]).await;
    assert!(!ok, "the CLI cannot write either");
    assert!(
        stderr.contains("refuses writes"),
        "a clear CLI message: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Chat messages: acknowledged (201) until the database refuses, then 503, never 500.
    let mut acked = 0;
    loop {
        let res = send(acked).await;
        match res.status().as_u16() {
            201 => acked += 1,
            503 => {
                assert_error(res, 503, "unavailable", "retry").await;
                break;
            }
            other => panic!("a message during the fault got {other}"),
        }
        assert!(acked < 5000, "messages were never refused");
    }
    // Verification reads only memory: the token from before works throughout.
    assert_eq!(app.me(&token).await.status(), 200);

    fault.end(&app).await;
    let status = until_ok(|| async {
        match send(acked).await.status().as_u16() {
            201 => 200,
            other => other,
        }
    })
    .await;
    assert_eq!(status, 200, "messages again, without a restart");
    let stored: serde_json::Value = app
        .client
        .get(app.url(&format!("{messages}?limit=200&after=0")))
        .bearer_auth(&chatter)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=acked as i64 + 1).collect::<Vec<_>>(),
        "every acknowledged message, gapless, and nothing refused"
    );
    let status = until_ok(|| async {
        app.mint(json!({"userId": "after-the-fault"}))
            .await
            .status()
            .as_u16()
    })
    .await;
    assert_eq!(status, 200, "new users again, without a restart");
    assert_eq!(until_ok(|| readyz(&app)).await, 200, "ready again");
    let status = until_ok(|| async {
        app.invalidate(&app.tenant, json!({"externalId": "before-the-fault"}))
            .await
            .status()
            .as_u16()
    })
    .await;
    assert_eq!(status, 200, "the change log takes writes again");
    assert_eq!(
        app.me(&token).await.status(),
        401,
        "and the invalidation holds"
    );
    let (ok, stderr) =
        cli_outcome(&app.test_db.url, &["company", "create", "--name", "After"]).await;
    assert!(ok, "the CLI writes again: {stderr}");

    // Nothing answered was lost: the audit events of the mints answered 200 before, during
    // and after the fault are all written (the writer retries until it can).
    let after = app
        .db
        .find_user(
            &app.tenant.company,
            performchat::db::UserRef::External("after-the-fault"),
        )
        .await
        .unwrap()
        .expect("the user made after the fault");
    let wanted = [
        before["user"]["id"].as_str().unwrap().to_owned(),
        after.id.clone(),
    ];
    let mut missing = Vec::new();
    for _ in 0..100 {
        let events = app
            .db
            .list_audit_events(&performchat::db::AuditQuery {
                company_id: &app.tenant.company,
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        missing = wanted
            .iter()
            .filter(|id| {
                !events.iter().any(|e| {
                    e.kind == "token.minted"
                        && e.user_id.as_deref() == Some(id.as_str())
                        && e.outcome == "ok"
                })
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(missing.is_empty(), "mints never audited: {missing:?}");
}
