//! The benchmark's baseline: the smallest axum server that answers `GET /credentials/{db}` with
//! the bytes the broker returned for the same request, held in a static. Its throughput is the
//! practical upper bound for an axum service on the machine; `bench/run` builds and starts it.
//!
//! Usage: `static-baseline ADDR JSON_BODY_FILE URI_BODY_FILE`, where ADDR is `host:port` or
//! `unix:/path/of/a/socket` (created, and replaced if it exists); prints `listening <addr>`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

static JSON: OnceLock<&'static [u8]> = OnceLock::new();
static URI: OnceLock<&'static [u8]> = OnceLock::new();

#[derive(serde::Deserialize)]
struct Format {
    format: Option<String>,
}

async fn credentials(Query(format): Query<Format>) -> impl IntoResponse {
    let (content_type, body) = if format.format.as_deref() == Some("uri") {
        (
            "text/plain; charset=utf-8",
            URI.get().expect("set at start"),
        )
    } else {
        ("application/json", JSON.get().expect("set at start"))
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::ETAG, "\"baseline-version\""),
            (header::AGE, "1"),
        ],
        *body,
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, json, uri] = args.as_slice() else {
        eprintln!("usage: static-baseline ADDR JSON_BODY_FILE URI_BODY_FILE");
        std::process::exit(64);
    };
    let read = |path: &str| -> &'static [u8] {
        Box::leak(std::fs::read(path).expect("body file").into_boxed_slice())
    };
    JSON.set(read(json)).expect("set once");
    URI.set(read(uri)).expect("set once");
    let app = Router::new().route("/credentials/{db}", get(credentials));
    if let Some(path) = addr.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("bind the socket");
        println!("listening {addr}");
        axum::serve(listener, app).await.expect("serve");
    } else {
        let addr: SocketAddr = addr.parse().expect("ADDR is host:port or unix:PATH");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        println!("listening {}", listener.local_addr().expect("bound"));
        axum::serve(listener, app).await.expect("serve");
    }
}
