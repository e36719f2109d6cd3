//! A hostile local client, like a fuzzer: for a bounded time it sends generated garbage (methods,
//! header names and values, paths, bodies, framing) over raw TCP to both listeners, then checks
//! that every answer was well-formed HTTP, that no metric label took a value outside its fixed
//! set, that memory did not grow, and that the broker still serves.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{FileBroker, TOKEN, new_password, rss_kib};

/// How long each round of garbage lasts, per listener.
const ROUND: Duration = Duration::from_secs(6);
/// Connections sending garbage at once, per listener.
const SENDERS: usize = 3;

const DATABASES: &str = "[databases.a]\nsecret_id = \"sec-a\"\nhost = \"h\"\nport = 5432\nengine = \"postgres\"\n\
                         [databases.b]\nsecret_id = \"sec-b\"\n";

/// One generated request.
fn garbage(rng: &mut fastrand::Rng) -> Vec<u8> {
    let pick =
        |rng: &mut fastrand::Rng, options: &[&str]| options[rng.usize(..options.len())].to_owned();
    let token_chars =
        b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let token = |rng: &mut fastrand::Rng, len: std::ops::Range<usize>| -> String {
        let len = rng.usize(len);
        (0..len)
            .map(|_| token_chars[rng.usize(..token_chars.len())] as char)
            .collect()
    };
    let bytes = |rng: &mut fastrand::Rng, len: std::ops::Range<usize>| -> Vec<u8> {
        let len = rng.usize(len);
        (0..len).map(|_| rng.u8(..)).collect()
    };
    let mut out = Vec::new();
    // Request line.
    let method = match rng.u8(..10) {
        0..=3 => pick(
            rng,
            &[
                "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
            ],
        ),
        4..=7 => token(rng, 1..24),
        _ => String::from_utf8_lossy(&bytes(rng, 1..12)).into_owned(),
    };
    let db = match rng.u8(..6) {
        0 => "a".to_owned(),
        1 => "b".to_owned(),
        2 => token(rng, 1..80),
        3 => "a%2F..%00%ff".to_owned(),
        4 => "x".repeat(rng.usize(100..5000)),
        _ => String::new(),
    };
    let path = match rng.u8(..8) {
        0..=2 => format!("/credentials/{db}"),
        3 => format!("/credentials/{db}/refresh"),
        4 => pick(
            rng,
            &[
                "/metrics",
                "/healthz",
                "/readyz",
                "*",
                "/",
                "//credentials/a",
            ],
        ),
        5 => format!("/credentials/{db}?format={}", token(rng, 0..12)),
        6 => format!("/{}", token(rng, 0..200)),
        _ => String::from_utf8_lossy(&bytes(rng, 1..40)).into_owned(),
    };
    let version = pick(
        rng,
        &[
            "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "HTP/1.1", "",
        ],
    );
    out.extend_from_slice(format!("{method} {path} {version}\r\n").as_bytes());
    // Headers.
    let mut has_length = None;
    let mut chunked = false;
    for _ in 0..rng.usize(0..12) {
        match rng.u8(..12) {
            0 => out.extend_from_slice(format!("authorization: Bearer {TOKEN}\r\n").as_bytes()),
            1 => out
                .extend_from_slice(format!("authorization: {}\r\n", token(rng, 0..60)).as_bytes()),
            2 => {
                let n = rng.usize(0..5000);
                has_length = Some(n);
                out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
            }
            3 => out
                .extend_from_slice(format!("content-length: {}\r\n", token(rng, 8..9)).as_bytes()),
            4 => {
                chunked = true;
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            5 => out.extend_from_slice(
                format!("{}: {}\r\n", token(rng, 1..40), token(rng, 0..200)).as_bytes(),
            ),
            6 => {
                out.extend_from_slice(b"x-junk: ");
                out.extend_from_slice(&bytes(rng, 0..100));
                out.extend_from_slice(b"\r\n");
            }
            7 => out.extend_from_slice(
                format!("x-long: {}\r\n", "v".repeat(rng.usize(1000..20_000))).as_bytes(),
            ),
            8 => out
                .extend_from_slice(format!("if-none-match: {}\r\n", token(rng, 0..80)).as_bytes()),
            9 => {
                out.extend_from_slice(
                    format!("if-match: \"{}\"\r\n", token(rng, 0..80)).as_bytes(),
                );
            }
            10 => out.extend_from_slice(
                pick(
                    rng,
                    &[
                        "x-forwarded-for: 1.2.3.4\r\n",
                        "forwarded: for=x\r\n",
                        "host: a\r\n",
                        "host: b\r\n",
                    ],
                )
                .as_bytes(),
            ),
            _ => out.extend_from_slice(&bytes(rng, 1..30)),
        }
    }
    out.extend_from_slice(b"\r\n");
    // Body.
    let body_len = match has_length {
        Some(n) if rng.bool() => n,
        _ => rng.usize(0..3000),
    };
    if chunked && rng.bool() {
        let mut left = body_len;
        while left > 0 {
            let n = rng.usize(1..=left.min(1000));
            if rng.u8(..10) == 0 {
                out.extend_from_slice(format!("{}\r\n", token(rng, 4..5)).as_bytes());
            } else {
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            }
            out.extend_from_slice(&bytes(rng, n..n + 1));
            out.extend_from_slice(b"\r\n");
            left -= n;
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        let body = if rng.bool() {
            json!({"version_id": token(rng, 0..100)})
                .to_string()
                .into_bytes()
        } else {
            bytes(rng, body_len..body_len + 1)
        };
        out.extend_from_slice(&body);
    }
    out
}

/// What one exchange gave.
enum Exchange {
    Answered,
    /// Closed (or timed out) without an answer: allowed, a server may hang up on garbage.
    Silent,
}

/// Sends `request` and reads one answer: everything up to the end of its body (by
/// `Content-Length`), the connection's end, or a timeout. Panics on an answer that is not
/// well-formed HTTP/1.1 or whose JSON body does not parse.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return Exchange::Silent;
    };
    let _ = stream.write_all(request).await;
    let head = request.starts_with(b"HEAD ");
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buffer = [0u8; 8192];
    loop {
        if parse(&answer, head).is_some() {
            return Exchange::Answered;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    if answer.is_empty() {
        return Exchange::Silent;
    }
    // The connection ended: what came must be a whole answer.
    match parse(&answer, head) {
        Some(_) => Exchange::Answered,
        None => panic!(
            "an incomplete or malformed answer to {:?}: {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)]),
            String::from_utf8_lossy(&answer[..answer.len().min(500)])
        ),
    }
}

/// The status of a complete, well-formed answer in `answer` (to a HEAD request when
/// `head_request`); `None` while it is incomplete.
fn parse(answer: &[u8], head_request: bool) -> Option<u16> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).expect("the head is text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 ") || status_line.starts_with("HTTP/1.0 "),
        "status line {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().expect("a status code");
    let mut length = 0;
    let mut json_body = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("header line {line:?}"));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().expect("a content length"),
            "content-type" => json_body = value == "application/json",
            _ => {}
        }
    }
    // The answer to HEAD, and a 304, have no body whatever their content-length says.
    if head_request || status == 304 {
        return Some(status);
    }
    let body = &answer[end + 4..];
    if body.len() < length {
        return None;
    }
    if json_body {
        let value: Value = serde_json::from_slice(&body[..length]).expect("a JSON body");
        if status >= 400 {
            assert!(value["error"]["code"].is_string(), "an error body: {value}");
        }
    }
    Some(status)
}

/// Sends garbage to `addr` from [`SENDERS`] connections at once for `round`; returns how many
/// requests were answered and how many were not.
async fn barrage(addr: SocketAddr, round: Duration, seed: u64) -> (usize, usize) {
    let mut senders = tokio::task::JoinSet::new();
    for n in 0..SENDERS {
        senders.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed + n as u64);
            let (mut answered, mut silent) = (0, 0);
            let until = Instant::now() + round;
            while Instant::now() < until {
                match exchange(addr, &garbage(&mut rng)).await {
                    Exchange::Answered => answered += 1,
                    Exchange::Silent => silent += 1,
                }
            }
            (answered, silent)
        });
    }
    let mut totals = (0, 0);
    while let Some(result) = senders.join_next().await {
        let (answered, silent) = result.unwrap();
        totals.0 += answered;
        totals.1 += silent;
    }
    totals
}

/// Every label of every series on a `/metrics` page, checked against its fixed set of values.
fn check_labels(page: &str) -> usize {
    let codes = [
        "ok",
        "not_modified",
        "unauthorized",
        "forbidden",
        "forwarded_request_rejected",
        "invalid_database_name",
        "bad_request",
        "unknown_database",
        "not_found",
        "method_not_allowed",
        "headers_too_large",
        "payload_too_large",
        "secret_not_found",
        "upstream_error",
        "upstream_timeout",
        "malformed_secret",
        "credentials_expired",
        "overloaded",
        "request_timeout",
        "database_deleted",
        "invalid_format",
        "format_unavailable",
    ];
    let mut series = 0;
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        series += 1;
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.rsplit_once('}').unwrap().0;
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once("=\"").unwrap();
            let value = value.trim_end_matches('"');
            let allowed = match name {
                "method" => [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                    "other",
                ]
                .contains(&value),
                "route" => [
                    "/credentials/{db}",
                    "/credentials/{db}/refresh",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "unmatched",
                ]
                .contains(&value),
                "status" => value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()),
                "db" => ["a", "b", "other"].contains(&value),
                "client" => ["default", "unauthenticated"].contains(&value),
                "result" => codes.contains(&value) || ["hit", "stale", "miss"].contains(&value),
                "listener" => ["api", "admin"].contains(&value),
                "reason" => ["idle_evicted", "over_capacity", "header_timeout"].contains(&value),
                "operation" => value == "ReadFile",
                "outcome" => {
                    ["success", "not_found", "timeout", "error", "malformed"].contains(&value)
                }
                "le" | "version" => true,
                _ => false,
            };
            assert!(allowed, "label {name}={value:?} in {line}");
        }
    }
    series
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_both_listeners_leaves_labels_bounded_memory_flat_and_the_broker_serving() {
    let secrets = json!({
        "sec-a": {"username": "a", "password": new_password("hostile-a")},
        "sec-b": {"username": "b", "password": new_password("hostile-b")},
    });
    let broker = FileBroker::spawn(&secrets, "", "", "", DATABASES).await;
    broker.wait_ready(Duration::from_secs(10)).await;
    // A first round settles the allocator and every lazily made series.
    let warm_api = barrage(broker.api, Duration::from_secs(2), 1).await;
    let warm_admin = barrage(broker.admin, Duration::from_secs(2), 2).await;
    let rss_before = rss_kib(broker.pid());
    let series_before = check_labels(&broker.metrics().await);

    let (api, admin) = tokio::join!(
        barrage(broker.api, ROUND, 1000),
        barrage(broker.admin, ROUND, 2000)
    );
    let rss_after = rss_kib(broker.pid());
    let series_after = check_labels(&broker.metrics().await);
    println!(
        "FIGURE hostile round: api {} answered / {} silent, admin {} / {} (warm-up {:?} {:?}); \
         RSS {rss_before} -> {rss_after} KiB; series {series_before} -> {series_after}",
        api.0, api.1, admin.0, admin.1, warm_api, warm_admin
    );
    assert!(
        api.0 > 200 && admin.0 > 200,
        "too few answers to mean anything"
    );
    assert!(
        rss_after < rss_before + 2048,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        series_after <= series_before + 40,
        "series grew from {series_before} to {series_after}"
    );
    assert_eq!(broker.admin_get("/healthz").await.status(), 200);
    assert_eq!(broker.get("a").await.status(), 200);
}
