//! Fault injection: outages, slowness, throttling, stale limits, overload, hostile input and
//! draining under load, with moto behind the fault proxy. Figures go to stderr as `FIGURE ...`
//! lines (run with `--nocapture` to read them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    BrokerOptions, Fault, TOKEN, TestBroker, Upstream, json_body, metric, new_password,
};

async fn upstream_with(secrets: &[&str]) -> Upstream {
    let upstream = Upstream::start().await;
    for name in secrets {
        let password = new_password("resilience");
        upstream
            .create_secret(name, &json!({"username": "u", "password": password}))
            .await;
    }
    upstream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_outage_under_steady_load_fails_no_request() {
    let upstream = upstream_with(&["a", "b"]).await;
    let broker = Arc::new(
        BrokerOptions {
            ttl: "2s",
            ..BrokerOptions::new(upstream.proxy.endpoint())
                .database("a", "a", "")
                .database("b", "b", "")
        }
        .spawn()
        .await,
    );
    broker.wait_ready(Duration::from_secs(10)).await;
    let calls_before = upstream.proxy.count("GetSecretValue");

    upstream.proxy.set_fault(Fault::Reset);
    let outage_started = Instant::now();
    let outage = Duration::from_secs(30);
    let load: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|db| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while outage_started.elapsed() < outage {
                    let at = outage_started.elapsed();
                    let response = broker.get(db).await;
                    let status = response.status().as_u16();
                    let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
                    let body: Value = response.json().await.unwrap();
                    seen.push((at, status, body["stale"].as_bool(), age));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in load {
        results.push(task.await.unwrap());
    }
    let calls_during = upstream.proxy.count("GetSecretValue") - calls_before;
    let metrics = broker.metrics().await;

    for (db, seen) in ["a", "b"].iter().zip(&results) {
        assert!(
            seen.iter().all(|(_, status, _, _)| *status == 200),
            "{db}: a request failed"
        );
        let after_ttl: Vec<_> = seen
            .iter()
            .filter(|(at, ..)| *at > Duration::from_millis(2100))
            .collect();
        assert!(
            after_ttl
                .iter()
                .all(|(_, _, stale, age)| *stale == Some(true) && *age >= 2)
        );
        let stale = seen.iter().filter(|(_, _, s, _)| *s == Some(true)).count();
        let counted = metric(
            &metrics,
            "credential_broker_stale_served_total",
            &[("db", db)],
        );
        assert_eq!(
            counted,
            Some(stale as f64),
            "{db}: every stale serve is counted"
        );
        eprintln!(
            "FIGURE outage db={db} requests={} stale={stale} failed=0",
            seen.len()
        );
    }
    assert_eq!(
        metric(&metrics, "credential_broker_upstream_up", &[]),
        Some(0.0)
    );
    assert!(
        metric(
            &metrics,
            "credential_broker_upstream_consecutive_failures",
            &[("db", "a")]
        )
        .unwrap()
            >= 3.0
    );
    // Backoff doubles from 100 ms to a 2 s cap (with jitter between half and all of it):
    // about 6 attempts ramping up and then one every 1-2 s, per database.
    eprintln!("FIGURE outage upstream_attempts_in_30s={calls_during} (2 dbs)");
    assert!(
        calls_during <= 2 * (30 + 8),
        "{calls_during} upstream attempts in 30 s"
    );
    let stale_warnings = broker
        .log_events()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("serving stale credentials")
        })
        .count();
    assert_eq!(stale_warnings, 2, "one warning per database per outage");

    upstream.proxy.set_fault(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = json_body(broker.get("a").await).await;
        if body["stale"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 5 s of the outage ending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(&metrics, "credential_broker_upstream_up", &[]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_the_timeout_keeps_request_latency_bounded() {
    let upstream = upstream_with(&["warm", "cold"]).await;
    let broker = BrokerOptions {
        ttl: "1s",
        operation_timeout: "1s",
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .database("warm", "warm", "")
            .database("cold", "cold", "")
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    upstream.proxy.set_delay(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let started = Instant::now();
    let response = broker.get("warm").await;
    let warm_latency = started.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await["stale"], true);

    // Force the on-demand path: refresh goes upstream (unless a backoff is running).
    let started = Instant::now();
    let response = broker.refresh("cold").await;
    let cold_latency = started.elapsed();
    let status = response.status();
    let code = json_body(response).await["error"]["code"].clone();
    eprintln!(
        "FIGURE slow-upstream stale_get_ms={} refresh_ms={} (timeout 1000 ms, upstream 3000 ms)",
        warm_latency.as_millis(),
        cold_latency.as_millis()
    );
    assert!(
        warm_latency < Duration::from_millis(500),
        "stale serve waited: {warm_latency:?}"
    );
    assert_eq!(status, 504);
    assert_eq!(code, "upstream_timeout");
    assert!(
        cold_latency < Duration::from_millis(1500),
        "1 s timeout took {cold_latency:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_with_growing_spacing_and_recovers() {
    let upstream = upstream_with(&["t"]).await;
    upstream.proxy.set_fault(Fault::Throttle);
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("t", "t", "")
        .spawn()
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let arrivals = upstream.proxy.arrivals();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "FIGURE throttling attempt_gaps_ms={:?}",
        gaps.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(gaps.len() >= 5, "attempts kept coming: {gaps:?}");
    // Equal jitter: each delay lies in [d/2, d] with d doubling, so a gap always exceeds the one
    // two places before it until the 2 s cap is reached.
    for i in 0..4 {
        assert!(gaps[i + 2] > gaps[i], "spacing did not grow: {gaps:?}");
    }
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_millis(2200)),
        "cap exceeded: {gaps:?}"
    );
    let response = broker.get("t").await;
    assert_eq!(
        response.status(),
        502,
        "throttled answers are upstream errors"
    );
    let metrics = broker.metrics().await;
    assert!(
        metric(
            &metrics,
            "credential_broker_upstream_backoff_seconds",
            &[("db", "t")]
        )
        .unwrap()
            > 0.0
    );

    upstream.proxy.set_fault(Fault::None);
    broker.wait_ready(Duration::from_secs(5)).await;
    assert_eq!(broker.get("t").await.status(), 200);
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_upstream_backoff_seconds",
            &[("db", "t")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, "credential_broker_upstream_up", &[]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_stale_the_answer_is_503_credentials_expired() {
    let upstream = upstream_with(&["e"]).await;
    let broker = BrokerOptions {
        ttl: "1s",
        max_stale: "1s",
        ..BrokerOptions::new(upstream.proxy.endpoint()).database("e", "e", "")
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    upstream.proxy.set_fault(Fault::Status(503));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_stale = false;
    let expired = loop {
        let response = broker.get("e").await;
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
            break json_body(response).await;
        }
        assert_eq!(response.status(), 200);
        saw_stale |= json_body(response).await["stale"] == true;
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        saw_stale,
        "stale credentials were served before they expired"
    );
    assert_eq!(expired["error"]["code"], "credentials_expired");
    assert_eq!(
        broker.get("e").await.status(),
        503,
        "stays expired while the source fails"
    );
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_credentials_expired_total",
            &[("db", "e")]
        ),
        Some(2.0),
        "each 503 credentials_expired is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_cap_get_503_at_once() {
    let upstream = upstream_with(&["slow", "cached"]).await;
    let cap = 10;
    let broker = Arc::new(
        BrokerOptions {
            server_toml: format!("max_concurrent_requests = {cap}"),
            ..BrokerOptions::new(upstream.proxy.endpoint())
                .database("slow", "slow", "")
                .database("cached", "cached", "")
                .cold()
        }
        .spawn()
        .await,
    );
    assert_eq!(broker.get("cached").await.status(), 200);
    upstream.proxy.set_delay(Duration::from_secs(2));
    let requests: Vec<_> = (0..cap + 50)
        .map(|_| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                let started = Instant::now();
                let response = broker.get("slow").await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, started.elapsed(), body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let health = broker.admin_get("/healthz").await;
    let admin_latency = started.elapsed();
    assert_eq!(health.status(), 200);
    // A cache hit takes no place, but is refused too while every place is taken.
    let hit = broker.get("cached").await;
    assert_eq!(hit.status(), 503, "a hit with every place taken");
    let body: Value = hit.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");

    let mut results = Vec::new();
    for request in requests {
        results.push(request.await.unwrap());
    }
    let ok = results.iter().filter(|(s, ..)| *s == 200).count();
    let shed: Vec<_> = results.iter().filter(|(s, ..)| *s == 503).collect();
    let slowest_shed = shed.iter().map(|(_, t, _)| *t).max().unwrap_or_default();
    eprintln!(
        "FIGURE overload cap={cap} sent={} ok={ok} shed={} slowest_shed_ms={} admin_healthz_ms={}",
        cap + 50,
        shed.len(),
        slowest_shed.as_millis(),
        admin_latency.as_millis()
    );
    assert_eq!(ok, cap);
    assert_eq!(shed.len(), 50);
    assert!(
        shed.iter()
            .all(|(_, _, body)| body["error"]["code"] == "overloaded")
    );
    assert!(
        slowest_shed < Duration::from_secs(1),
        "shedding waited {slowest_shed:?}"
    );
    assert!(
        admin_latency < Duration::from_millis(500),
        "admin stalled {admin_latency:?}"
    );
    assert_eq!(
        broker.get("cached").await.status(),
        200,
        "places free again"
    );
}

/// Sends raw bytes to the API and returns the status and body of the answer.
async fn raw(broker: &TestBroker, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(broker.api).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    let text = String::from_utf8_lossy(&buffer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_clean_json_4xx_and_never_reaches_upstream() {
    let upstream = upstream_with(&["orders"]).await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("orders", "orders", "")
        .spawn()
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let calls = upstream.proxy.count("GetSecretValue");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let big = "x".repeat(10 * 1024);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!(
                "GET /credentials/../../etc/passwd HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
            404,
            "not_found",
        ),
        (
            format!(
                "GET /credentials/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
            "invalid_database_name",
        ),
        (
            format!(
                "GET /credentials/%2e%2e HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
            "invalid_database_name",
        ),
        (
            format!(
                "GET /credentials/%ff%fe HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
            "bad_request",
        ),
        (
            format!(
                "GET /credentials/{} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
                "a".repeat(65)
            ),
            400,
            "invalid_database_name",
        ),
        (
            format!(
                "GET /credentials/orders HTTP/1.1\r\nHost: x\r\n{auth}X-Big: {big}\r\nConnection: close\r\n\r\n"
            ),
            431,
            "headers_too_large",
        ),
        // A request target far longer than any valid one, within the read buffer (20 KiB).
        (
            format!(
                "GET /credentials/orders?format={} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
                "%F0%9D%94%B8".repeat(1000)
            ),
            400,
            "invalid_format",
        ),
        (
            format!(
                "POST /credentials/orders/refresh HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1048576\r\nConnection: close\r\n\r\n"
            ),
            413,
            "payload_too_large",
        ),
        (
            format!(
                "PUT /credentials/orders HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            405,
            "method_not_allowed",
        ),
        (
            format!(
                "DELETE /credentials/orders/refresh HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            ),
            405,
            "method_not_allowed",
        ),
        (
            "GET /credentials/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            401,
            "unauthorized",
        ),
        (
            format!(
                "GET /credentials/orders HTTP/1.1\r\nHost: x\r\n{auth}X-Forwarded-For: 1.2.3.4\r\nConnection: close\r\n\r\n"
            ),
            400,
            "forwarded_request_rejected",
        ),
    ];
    for (request, status, code) in &cases {
        let (got, body) = raw(&broker, request.as_bytes()).await;
        let first_line = request.lines().next().unwrap();
        let shown = &first_line[..first_line.len().min(80)];
        assert_eq!(got, *status, "{shown}");
        let body: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{shown}: not JSON: {body}"));
        assert_eq!(body["error"]["code"], *code, "{shown}");
    }
    // Far past the read buffer, hyper itself refuses the headers (431 without a body).
    let huge = format!(
        "GET /credentials/orders HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "y".repeat(256 * 1024)
    );
    let (status, _) = raw(&broker, huge.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(
        upstream.proxy.count("GetSecretValue"),
        calls,
        "no hostile request reached upstream"
    );
    assert_eq!(broker.get("orders").await.status(), 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_100_requests_in_flight_completes_them_all_and_exits_zero() {
    let upstream = upstream_with(&["d"]).await;
    let mut broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("d", "d", "")
        .cold()
        .spawn()
        .await;
    upstream.proxy.set_delay(Duration::from_millis(1500));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let (client, url) = (client.clone(), broker.url("/credentials/d"));
            tokio::spawn(async move { client.get(url).bearer_auth(TOKEN).send().await })
        })
        .collect();
    // The scrape itself is one of the requests in flight.
    #[allow(clippy::float_cmp)] // a count, exact in f64
    broker
        .wait_for_metric(
            "credential_broker_http_requests_in_flight",
            &[],
            Duration::from_secs(5),
            |in_flight| in_flight == 101.0,
        )
        .await;
    let signalled = Instant::now();
    broker.terminate();
    let mut ok = 0;
    for request in requests {
        let response = request
            .await
            .unwrap()
            .expect("an in-flight request completes");
        assert_eq!(response.status(), 200);
        ok += 1;
    }
    let status = broker.wait_exit(Duration::from_secs(10)).await;
    eprintln!(
        "FIGURE drain in_flight=100 ok={ok} exit_after_ms={}",
        signalled.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(0));
}
