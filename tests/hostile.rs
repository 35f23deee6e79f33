//! Hostile input against every endpoint: each request has its expected status and error
//! code; none may produce a 5xx; the server stays up and still serves a valid request.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{forge, spawn_app};
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// The error code, where the answer is ours (a 431 for oversize headers comes from the
    /// HTTP layer before any handler).
    code: Option<&'static str>,
}

fn json_case(
    name: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: "POST",
        path,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        status,
        code: Some(code),
    }
}

fn me_case(name: &'static str, authorization: String, code: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path: "/rest/v1/auth/me",
        headers: vec![("authorization", authorization)],
        body: vec![],
        status: 401,
        code: Some(code),
    }
}

#[tokio::test]
async fn hostile_requests_get_their_answer_and_never_a_5xx() {
    let app = spawn_app().await;
    let (key, secret) = (app.tenant.key_id.clone(), app.tenant.key_secret.clone());
    let mint = |extra: &str| format!(r#"{{"keyId":"{key}","keySecret":"{secret}"{extra}}}"#);
    let good = app.token_for("user_123").await;
    let claims = common::claims(&good);
    let signing = app.db.list_signing_keys().await.unwrap().remove(0).secret;
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let parts: Vec<&str> = good.split('.').collect();
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let deep = format!(r#","x":{}1{}"#, "[".repeat(500), "]".repeat(500));
    let mut invalid_utf8 = mint(r#","userId":"ab"#).into_bytes();
    invalid_utf8.pop();
    invalid_utf8.extend_from_slice(b"\xff\xfe\"}");

    let t = "/rest/v1/auth/token";
    let cases = vec![
        json_case("not JSON", t, "{", 400, "invalid_json"),
        json_case("truncated JSON", t, r#"{"keyId":"pk_"#, 400, "invalid_json"),
        json_case("empty body", t, "", 400, "invalid_json"),
        json_case("null", t, "null", 400, "invalid_json"),
        json_case("array", t, "[]", 400, "invalid_json"),
        json_case("string", t, r#""hello""#, 400, "invalid_json"),
        json_case("number", t, "123", 400, "invalid_json"),
        json_case("deep nesting", t, mint(&deep), 400, "invalid_json"),
        json_case(
            "duplicate keys",
            t,
            mint(r#","userId":"a","userId":"b""#),
            400,
            "invalid_json",
        ),
        json_case(
            "invalid UTF-8 in userId",
            t,
            invalid_utf8,
            400,
            "invalid_json",
        ),
        json_case(
            "trailing garbage",
            t,
            mint(r#","userId":"u"} x"#),
            400,
            "invalid_json",
        ),
        json_case(
            "NUL in userId",
            t,
            mint(r#","userId":"a\u0000b""#),
            400,
            "invalid_request",
        ),
        json_case(
            "newline in userId",
            t,
            mint(r#","userId":"a\nb""#),
            400,
            "invalid_request",
        ),
        json_case(
            "10 kB userId",
            t,
            mint(&format!(r#","userId":"{}""#, "u".repeat(10_000))),
            400,
            "invalid_request",
        ),
        json_case(
            "empty userId",
            t,
            mint(r#","userId":"""#),
            400,
            "invalid_request",
        ),
        json_case(
            "userId object",
            t,
            mint(r#","userId":{"id":1}"#),
            400,
            "invalid_request",
        ),
        json_case(
            "userId array",
            t,
            mint(r#","userId":[1]"#),
            400,
            "invalid_request",
        ),
        json_case(
            "userId boolean",
            t,
            mint(r#","userId":true"#),
            400,
            "invalid_request",
        ),
        json_case(
            "userId fraction",
            t,
            mint(r#","userId":1.5"#),
            400,
            "invalid_request",
        ),
        json_case(
            "userId 1e30",
            t,
            mint(r#","userId":1000000000000000000000000000000"#),
            400,
            "invalid_request",
        ),
        json_case("missing userId", t, mint(""), 400, "invalid_request"),
        json_case(
            "keyId number",
            t,
            format!(r#"{{"keyId":5,"keySecret":"{secret}","userId":"u"}}"#),
            400,
            "invalid_request",
        ),
        json_case(
            "keySecret array",
            t,
            format!(r#"{{"keyId":"{key}","keySecret":["x"],"userId":"u"}}"#),
            400,
            "invalid_request",
        ),
        json_case(
            "10 kB keyId",
            t,
            format!(
                r#"{{"keyId":"pk_{}","keySecret":"{secret}","userId":"u"}}"#,
                "x".repeat(10_000)
            ),
            401,
            "invalid_credentials",
        ),
        json_case(
            "keyId with NUL",
            t,
            format!(r#"{{"keyId":"pk_\u0000","keySecret":"{secret}","userId":"u"}}"#),
            401,
            "invalid_credentials",
        ),
        json_case(
            "SQL in keyId",
            t,
            format!(r#"{{"keyId":"pk_' OR '1'='1","keySecret":"{secret}","userId":"u"}}"#),
            401,
            "invalid_credentials",
        ),
        json_case(
            "NUL in agentId",
            t,
            mint(r#","userId":"u","agentId":"a\u0000""#),
            400,
            "invalid_request",
        ),
        json_case(
            "10 kB agentId",
            t,
            mint(&format!(
                r#","userId":"u","agentId":"{}""#,
                "a".repeat(10_000)
            )),
            400,
            "invalid_request",
        ),
        json_case(
            "agentId number",
            t,
            mint(r#","userId":"u","agentId":7"#),
            400,
            "invalid_request",
        ),
        json_case(
            "SQL in agentId",
            t,
            mint(r#","userId":"u","agentId":"x' OR '1'='1""#),
            404,
            "agent_not_found",
        ),
        json_case(
            "expiresIn \"0\"",
            t,
            mint(r#","userId":"u","expiresIn":"0""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn \"-1h\"",
            t,
            mint(r#","userId":"u","expiresIn":"-1h""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn \"1000y\"",
            t,
            mint(r#","userId":"u","expiresIn":"1000y""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn \"1e400\"",
            t,
            mint(r#","userId":"u","expiresIn":"1e400""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn 1e400",
            t,
            mint(r#","userId":"u","expiresIn":1e400"#),
            400,
            "invalid_json",
        ),
        json_case(
            "expiresIn 2^63",
            t,
            mint(r#","userId":"u","expiresIn":9223372036854775808"#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn -2^63",
            t,
            mint(r#","userId":"u","expiresIn":-9223372036854775808"#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn \"NaN\"",
            t,
            mint(r#","userId":"u","expiresIn":"NaN""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn NaN",
            t,
            mint(r#","userId":"u","expiresIn":NaN"#),
            400,
            "invalid_json",
        ),
        json_case(
            "expiresIn \"\"",
            t,
            mint(r#","userId":"u","expiresIn":"""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn -0.0",
            t,
            mint(r#","userId":"u","expiresIn":-0.0"#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn \"1h \"",
            t,
            mint(r#","userId":"u","expiresIn":"1h ""#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn object",
            t,
            mint(r#","userId":"u","expiresIn":{"h":1}"#),
            400,
            "invalid_request",
        ),
        json_case(
            "expiresIn 101 chars",
            t,
            mint(&format!(
                r#","userId":"u","expiresIn":"{}h""#,
                "1".repeat(100)
            )),
            400,
            "invalid_request",
        ),
        json_case(
            "over 16 KiB",
            t,
            mint(&format!(r#","userId":"u","pad":"{}""#, "x".repeat(17_000))),
            413,
            "payload_too_large",
        ),
        Case {
            name: "text/plain",
            method: "POST",
            path: t,
            headers: vec![("content-type", "text/plain".into())],
            body: mint(r#","userId":"u""#).into(),
            status: 415,
            code: Some("unsupported_media_type"),
        },
        Case {
            name: "form",
            method: "POST",
            path: t,
            headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
            body: b"keyId=a&userId=u".to_vec(),
            status: 415,
            code: Some("unsupported_media_type"),
        },
        Case {
            name: "multipart",
            method: "POST",
            path: t,
            headers: vec![("content-type", "multipart/form-data; boundary=x".into())],
            body: b"--x--".to_vec(),
            status: 415,
            code: Some("unsupported_media_type"),
        },
        Case {
            name: "no content type",
            method: "POST",
            path: t,
            headers: vec![],
            body: mint(r#","userId":"u""#).into(),
            status: 415,
            code: Some("unsupported_media_type"),
        },
        Case {
            name: "GET token",
            method: "GET",
            path: t,
            headers: vec![],
            body: vec![],
            status: 405,
            code: Some("method_not_allowed"),
        },
        Case {
            name: "PUT token",
            method: "PUT",
            path: t,
            headers: vec![],
            body: vec![],
            status: 405,
            code: Some("method_not_allowed"),
        },
        Case {
            name: "DELETE me",
            method: "DELETE",
            path: "/rest/v1/auth/me",
            headers: vec![],
            body: vec![],
            status: 405,
            code: Some("method_not_allowed"),
        },
        Case {
            name: "unknown path",
            method: "GET",
            path: "/rest/v1/../../etc/passwd",
            headers: vec![],
            body: vec![],
            status: 404,
            code: Some("not_found"),
        },
        Case {
            name: "oversize header",
            method: "GET",
            path: "/rest/v1/auth/me",
            headers: vec![("authorization", format!("Bearer {}", "a".repeat(1_000_000)))],
            body: vec![],
            status: 431,
            code: None,
        },
        me_case("no token", "Bearer ".into(), "token_invalid"),
        me_case("wrong scheme", format!("Token {good}"), "token_invalid"),
        me_case("garbage", "Bearer a.b.c".into(), "token_invalid"),
        me_case(
            "alg none",
            format!(
                "Bearer {}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                parts[1]
            ),
            "token_invalid",
        ),
        me_case(
            "alg None",
            format!(
                "Bearer {}",
                forge(r#"{"alg":"None","typ":"JWT"}"#, &claims, &signing)
            ),
            "token_invalid",
        ),
        me_case(
            "alg HS512",
            format!(
                "Bearer {}",
                forge(r#"{"alg":"HS512","typ":"JWT"}"#, &claims, &signing)
            ),
            "token_invalid",
        ),
        me_case(
            "alg RS256",
            format!(
                "Bearer {}",
                forge(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, &signing)
            ),
            "token_invalid",
        ),
        me_case(
            "tampered header",
            format!(
                "Bearer {}.{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","x":1}"#),
                parts[1],
                parts[2]
            ),
            "token_invalid",
        ),
        me_case(
            "tampered payload",
            format!(
                "Bearer {}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(with("sub", json!("other")).to_string()),
                parts[2]
            ),
            "token_invalid",
        ),
        me_case(
            "string exp",
            format!(
                "Bearer {}",
                forge(
                    hs256,
                    &with("exp", json!(claims["exp"].to_string())),
                    &signing
                )
            ),
            "token_invalid",
        ),
        me_case(
            "future iat",
            format!(
                "Bearer {}",
                forge(
                    hs256,
                    &with("iat", json!(claims["exp"].as_i64().unwrap() - 1)),
                    &signing
                )
            ),
            "token_invalid",
        ),
        // exp before iat: refused as malformed rather than as expired.
        me_case(
            "exp before iat",
            format!(
                "Bearer {}",
                forge(
                    hs256,
                    &with("exp", json!(claims["iat"].as_i64().unwrap() - 10)).clone(),
                    &signing
                )
            ),
            "token_invalid",
        ),
        me_case(
            "another deployment's token",
            format!("Bearer {}", forge(hs256, &claims, &[1u8; 32])),
            "token_invalid",
        ),
        me_case(
            "9 KiB token",
            format!("Bearer {}.{}.{}", parts[0], parts[1], "A".repeat(9 * 1024)),
            "token_invalid",
        ),
        me_case("trailing bytes", format!("Bearer {good}x"), "token_invalid"),
        json_case(
            "invalidate: userId array",
            "/rest/v1/auth/invalidate",
            mint(r#","userId":[1]"#),
            400,
            "invalid_request",
        ),
        json_case(
            "invalidate: NUL externalId",
            "/rest/v1/auth/invalidate",
            mint(r#","externalId":"\u0000""#),
            400,
            "invalid_request",
        ),
        json_case(
            "revoke: token number",
            "/rest/v1/auth/revoke",
            mint(r#","token":5"#),
            400,
            "invalid_request",
        ),
        json_case(
            "revoke: forged token",
            "/rest/v1/auth/revoke",
            mint(&format!(
                r#","token":"{}""#,
                forge(hs256, &claims, &[1u8; 32])
            )),
            400,
            "invalid_request",
        ),
        json_case(
            "introspect: missing token",
            "/rest/v1/auth/introspect",
            mint(""),
            400,
            "invalid_request",
        ),
        Case {
            name: "audit: bad Basic",
            method: "GET",
            path: "/rest/v1/audit",
            headers: vec![("authorization", "Basic %%%".into())],
            body: vec![],
            status: 401,
            code: Some("invalid_credentials"),
        },
        Case {
            name: "audit: bad limit",
            method: "GET",
            path: "/rest/v1/audit?limit=abc",
            headers: vec![(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
                ),
            )],
            body: vec![],
            status: 400,
            code: Some("invalid_request"),
        },
        Case {
            name: "audit: bad cursor",
            method: "GET",
            path: "/rest/v1/audit?cursor=1;DROP",
            headers: vec![(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
                ),
            )],
            body: vec![],
            status: 400,
            code: Some("invalid_request"),
        },
    ];
    assert!(cases.len() >= 50, "{} cases", cases.len());

    for case in cases {
        let mut req = app
            .client
            .request(case.method.parse().unwrap(), app.url(case.path))
            .body(case.body.clone());
        for (name, value) in &case.headers {
            req = req.header(*name, value);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = res.status().as_u16();
        assert!(status < 500, "{}: {status}", case.name);
        assert_eq!(status, case.status, "{}", case.name);
        if let Some(code) = case.code {
            let body: Value = res
                .json()
                .await
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", case.name));
            assert_eq!(body["error"]["code"], code, "{}: {body}", case.name);
        }
    }

    // Still up, still right.
    let res = app.mint(json!({"userId": "user_123"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.me(&good).await.status(), 200);
}
