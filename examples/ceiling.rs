//! The HTTP ceiling for the load benchmark (`scripts/bench.sh`): a minimal hyper server that
//! reads each request whole and answers the benchmark's routes with a constant body of the
//! size performchat's answer has, on the same runtime. performchat's figures are reported as
//! a share of this one's.
//!
//! `cargo run --release --example ceiling -- ADDR TOKEN_BODY_BYTES ME_BODY_BYTES`

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    let token_len: usize = args.next().map_or(600, |s| s.parse().unwrap());
    let me_len: usize = args.next().map_or(300, |s| s.parse().unwrap());
    let token_body = Bytes::from(constant_json(token_len));
    let me_body = Bytes::from(constant_json(me_len));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!(
        "ceiling listening on http://{}",
        listener.local_addr().unwrap()
    );
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let (token_body, me_body) = (token_body.clone(), me_body.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (token_body, me_body) = (token_body.clone(), me_body.clone());
                async move {
                    let path = req.uri().path().to_owned();
                    // Read the body whole, as the real server does.
                    let _ = req.into_body().collect().await;
                    let body = match path.as_str() {
                        "/rest/v1/auth/token" => token_body,
                        "/rest/v1/auth/me" => me_body,
                        _ => Bytes::from_static(b"{}"),
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A JSON object of exactly `len` bytes (at least 12).
fn constant_json(len: usize) -> Vec<u8> {
    let pad = len.saturating_sub(12);
    format!("{{\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes()
}
