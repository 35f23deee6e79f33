//! The client examples of the docs (Node fetch, Python httpx, Ruby Net::HTTP), run against the
//! real server with only the base URL changed. Their runtimes and packages are installed by
//! `.ci/run`, which sets `PERFORMCHAT_TEST_CLIENTS=1`: then a missing runtime fails the test.
//! Elsewhere a missing runtime is reported and that example is not run.

mod common;

use std::process::Command;

use common::{TestApp, spawn_app};
use serde_json::Value;

const DOCS_BASE: &str = "https://api.performchat.com";

fn clients_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether `program args…` runs; if not, see [`missing`].
fn available(program: &str, args: &[&str], what: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    ok || missing(what)
}

/// A missing runtime: a failure under CI, a notice elsewhere. Returns false.
fn missing(what: &str) -> bool {
    common::missing_tool(
        "PERFORMCHAT_TEST_CLIENTS",
        &format!("{what} is not available"),
    )
}

/// Runs an example with its URL pointed at `app` and the key pair in its environment, and
/// returns the JSON its driver prints.
async fn run_example(app: &TestApp, program: &str, file: &str) -> Value {
    let source = std::fs::read_to_string(clients_dir().join(file)).unwrap();
    assert!(source.contains(DOCS_BASE));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(file);
    std::fs::write(&script, source.replace(DOCS_BASE, &app.base)).unwrap();
    let out = tokio::process::Command::new(program)
        .arg(&script)
        .env("PERFORMCHAT_KEY_ID", &app.tenant.key_id)
        .env("PERFORMCHAT_KEY_SECRET", &app.tenant.key_secret)
        .env("NODE_PATH", clients_dir().join("node_modules"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{file} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn app_with_docs_agent() -> TestApp {
    let app = spawn_app().await;
    // The Node example names the agent 'your-agent-id' literally.
    app.db
        .insert_agent(
            "your-agent-id",
            "company_xyz",
            "Docs Agent",
            true,
            false,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    app
}

async fn assert_token_for(app: &TestApp, token: &str, external: &str, agent: &str) {
    let res = app.me(token).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["user"]["externalId"], external);
    assert_eq!(me["agent"]["id"], agent);
}

#[tokio::test]
async fn the_node_fetch_example_works_unchanged() {
    if !available("node", &["--version"], "node") {
        return;
    }
    if !clients_dir().join("node_modules/node-fetch").exists() {
        missing("node-fetch (npm ci --prefix tests/clients)");
        return;
    }
    let app = app_with_docs_agent().await;
    let out = run_example(&app, "node", "example.js").await;
    let by_string = &out["byString"];
    assert_eq!(by_string["externalId"], "user_123");
    assert!(cuid2::is_cuid2(by_string["userId"].as_str().unwrap()));
    assert_token_for(
        &app,
        by_string["token"].as_str().unwrap(),
        "user_123",
        "your-agent-id",
    )
    .await;
    // A numeric req.user.id becomes the text "42".
    assert_eq!(out["byNumber"]["externalId"], "42");
    let exp = common::claims(out["byNumber"]["token"].as_str().unwrap());
    assert_eq!(
        exp["exp"].as_i64().unwrap() - exp["iat"].as_i64().unwrap(),
        7 * 86400
    );
}

#[tokio::test]
async fn the_python_httpx_example_works_unchanged() {
    if !available(
        "python3",
        &["-c", "import httpx, fastapi"],
        "python3 with httpx and fastapi",
    ) {
        return;
    }
    let app = app_with_docs_agent().await;
    let out = run_example(&app, "python3", "example.py").await;
    assert_token_for(
        &app,
        out["withoutAgent"].as_str().unwrap(),
        "user_123",
        "agent_abc",
    )
    .await;
    assert_token_for(
        &app,
        out["withAgent"].as_str().unwrap(),
        "user_123",
        "your-agent-id",
    )
    .await;
}

#[tokio::test]
async fn the_ruby_net_http_example_works_unchanged() {
    if !available("ruby", &["--version"], "ruby") {
        return;
    }
    let app = app_with_docs_agent().await;
    let out = run_example(&app, "ruby", "example.rb").await;
    assert_token_for(
        &app,
        out["withoutAgent"].as_str().unwrap(),
        "user_123",
        "agent_abc",
    )
    .await;
    assert_token_for(
        &app,
        out["withAgent"].as_str().unwrap(),
        "user_123",
        "your-agent-id",
    )
    .await;
}
