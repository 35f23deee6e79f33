//! The widget: `GET /widget.js` as a company's page loads it, the demo's switches, and the
//! widget itself in a real browser (`widget/e2e/*.test.mjs`: Debian's chromium driven by
//! playwright-core, against the real binary on this suite's database). `.ci/run` installs
//! chromium and the widget's packages and sets `PERFORMCHAT_TEST_BROWSER=1`: then anything
//! missing fails the test. Elsewhere it is reported and the browser tests are not run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, TestDb, cli_json, create_acme, performchat, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn widget_js_is_served_to_any_site_cached_and_revalidated() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/widget.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["cache-control"], "public, max-age=600");
    assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let body = res.text().await.unwrap();
    assert_eq!(
        body,
        std::fs::read_to_string(repo().join("widget/widget.js")).unwrap(),
        "the script in the binary is widget/widget.js"
    );
    assert!(body.contains("window).PerformChat"));
    // What a page pays to embed the chat, as the README gives it.
    assert!(body.len() < 30 * 1024, "widget.js is {} bytes", body.len());

    let again = app
        .client
        .get(app.url("/widget.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.text().await.unwrap().is_empty());
    let stale = app
        .client
        .get(app.url("/widget.js"))
        .header("if-none-match", "\"older\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    // Everything else is still never cached.
    let me = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(me.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn the_demo_is_off_unless_asked_and_only_on_loopback_unless_public() {
    let app = spawn_app().await;
    for path in ["/demo", "/demo/agents"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path} without --demo");
    }
    let db = TestDb::new().await;
    let out = performchat(&db.url)
        .args(["serve", "--demo", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--demo") && said.contains("--demo-public") && said.contains("0.0.0.0"),
        "{said}"
    );

    let server = Server::start(&db.url, &["--demo", "--json"]);
    assert!(
        server.stdout.contains("/demo\""),
        "the banner says where the demo is: {}",
        server.stdout
    );
    let client = reqwest::Client::new();
    let call = async |req: reqwest::RequestBuilder| {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, text)
    };
    let (status, page) = call(client.get(server.url("/demo"))).await;
    assert_eq!(status, 200);
    assert!(page.contains("Reply as agent"));
    let (_, agents) = call(client.get(server.url("/demo/agents"))).await;
    let agents: Value = serde_json::from_str(&agents).unwrap();
    assert_eq!(agents["agents"][0]["name"], "Support Agent", "{agents}");
    // Tokens only for demo users, and bad input named.
    let token = |visitor: &str| {
        client
            .post(server.url("/demo/token"))
            .json(&serde_json::json!({ "visitor": visitor }))
    };
    let (status, refused) = call(token("../admin")).await;
    assert_eq!(status, 400);
    assert!(refused.contains("visitor must be"), "{refused}");
    let (_, minted) = call(token("abc-123")).await;
    let minted: Value = serde_json::from_str(&minted).unwrap();
    let me = client
        .get(server.url("/rest/v1/auth/me"))
        .bearer_auth(minted["token"].as_str().unwrap());
    let (_, me) = call(me).await;
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["user"]["externalId"], "demo-abc-123", "{me}");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Something the browser tests need is not there: a failure under CI, a notice elsewhere.
fn missing(what: &str) -> bool {
    common::missing_tool(
        "PERFORMCHAT_TEST_BROWSER",
        &format!("the widget's browser tests: {what}"),
    )
}

fn chromium() -> PathBuf {
    std::env::var_os("PERFORMCHAT_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), Into::into)
}

fn browser_tools_present() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        return missing("node is not installed (Debian's nodejs)");
    }
    if !Path::new(&chromium()).exists() {
        return missing(&format!(
            "chromium is not at {} (Debian's chromium, or PERFORMCHAT_CHROMIUM)",
            chromium().display()
        ));
    }
    if !repo().join("widget/node_modules/playwright-core").exists() {
        return missing("playwright-core is not installed (npm ci --prefix widget)");
    }
    true
}

#[tokio::test]
async fn the_widget_in_a_real_browser() {
    if !browser_tools_present() {
        return;
    }
    let db = TestDb::new().await;
    create_acme(&db.url);
    let agent = cli_json(
        &db.url,
        &[
            "agent",
            "create",
            "--company",
            "company_acme",
            "--name",
            "Acme Support",
        ],
    );
    assert_eq!(agent["name"], "Acme Support");
    // The demo's company, for the demo page's test.
    let boot = cli_json(
        &db.url,
        &[
            "company",
            "create",
            "--name",
            "Default company",
            "--id",
            "company_default",
        ],
    );
    assert_eq!(boot["id"], "company_default");
    cli_json(
        &db.url,
        &[
            "agent",
            "create",
            "--company",
            "company_default",
            "--name",
            "Support Agent",
        ],
    );
    let key = cli_json(&db.url, &["key", "create", "--company", "company_acme"]);
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=2", "widget/e2e/"])
        .current_dir(repo())
        .env("PERFORMCHAT_BIN", env!("CARGO_BIN_EXE_performchat"))
        .env("PERFORMCHAT_DATABASE_URL", &db.url)
        .env("PERFORMCHAT_TEST_COMPANY", "company_acme")
        .env("PERFORMCHAT_TEST_AGENT_NAME", "Acme Support")
        .env("PERFORMCHAT_TEST_KEY_ID", key["keyId"].as_str().unwrap())
        .env(
            "PERFORMCHAT_TEST_KEY_SECRET",
            key["keySecret"].as_str().unwrap(),
        )
        .env("PERFORMCHAT_CHROMIUM", chromium())
        .output()
        .await
        .expect("run node");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the widget's browser tests failed:\n{out}\n{err}"
    );
    // Every test ran: none skipped or left out.
    assert!(
        out.contains("# fail 0") && out.contains("# skipped 0"),
        "{out}"
    );
}
