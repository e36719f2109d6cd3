//! Rotations reaching applications: the long poll, the event stream, their caps and drain, and
//! a refresh naming the version the database just rejected. Rotations go through the stages
//! Secrets Manager uses (AWSPENDING put, the password changed in a real PostgreSQL, AWSCURRENT
//! moved), and the new password is checked by logging in with it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{BrokerOptions, TOKEN, TestBroker, Upstream, json_body, metric};
use crate::helpers::{new_password, passwords};
use crate::pg::{Postgres, is_wrong_password};

/// `GET /credentials/{db}?wait=...` with `If-None-Match: "<version>"`.
pub(crate) async fn long_poll(
    broker: &TestBroker,
    db: &str,
    wait: &str,
    version: &str,
) -> reqwest::Response {
    let url = broker.url(&format!("/credentials/{db}?wait={wait}"));
    let request = broker
        .http
        .get(url)
        .bearer_auth(TOKEN)
        .header("if-none-match", format!("\"{version}\""));
    broker.send(request).await
}

/// `POST /credentials/{db}/refresh` naming the version the caller found failing.
async fn refresh_failing(broker: &TestBroker, db: &str, version: &str) -> reqwest::Response {
    let url = broker.url(&format!("/credentials/{db}/refresh"));
    let request = broker
        .http
        .post(url)
        .bearer_auth(TOKEN)
        .header("if-match", format!("\"{version}\""));
    broker.send(request).await
}

pub(crate) fn etag(response: &reqwest::Response) -> String {
    response.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// A secret for role `app` of `pg`, with `password`.
pub(crate) fn pg_secret(pg: &Postgres, password: &str) -> Value {
    json!({"username": "app", "password": password, "host": "127.0.0.1", "port": pg.port,
           "dbname": "postgres", "engine": "postgres"})
}

/// Sets role `app`'s password in `pg` to a new one tagged `tag` and stores it as secret `orders`;
/// returns the password.
pub(crate) async fn seed_orders(upstream: &Upstream, pg: &Postgres, tag: &str) -> String {
    let password = new_password(tag);
    pg.set_password("app", &password).await;
    upstream
        .create_secret("orders", &pg_secret(pg, &password))
        .await;
    password
}

/// Rotates `secret` to a new password in the stages Secrets Manager goes through; returns the
/// new password and version.
pub(crate) async fn rotate(
    upstream: &Upstream,
    pg: &Postgres,
    secret: &str,
    tag: &str,
) -> (String, String) {
    let password = new_password(tag);
    let version = upstream
        .put_pending(secret, &pg_secret(pg, &password))
        .await;
    pg.set_password("app", &password).await;
    upstream.promote(secret, &version).await;
    (password, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_held_until_a_rotation_and_brings_the_new_password() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    let old = seed_orders(&upstream, &pg, "poll-old").await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("orders", "orders", "")
        .spawn()
        .await;
    let first = broker.get("orders").await;
    let v0 = etag(&first);

    // Nothing changes: 304 once the wait is over, within 10 % of it.
    let started = Instant::now();
    let response = long_poll(&broker, "orders", "2s", &v0).await;
    let held = started.elapsed();
    assert_eq!(response.status(), 304);
    assert_eq!(etag(&response), v0);
    assert!(
        held >= Duration::from_secs(2) && held < Duration::from_millis(2200),
        "held {held:?} for a 2 s wait"
    );
    eprintln!("FIGURE long poll: 304 after {held:?} for wait=2s");

    // Another version than the one named: answered at once.
    let started = Instant::now();
    let response = long_poll(&broker, "orders", "30s", "some-other-version").await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    // Held across a rotation: the first application whose login fails refreshes, and the held
    // request wakes with the new password at once.
    let poll = {
        let url = broker.url("/credentials/orders?wait=30s&format=uri");
        let request = broker
            .http
            .get(url)
            .bearer_auth(TOKEN)
            .header("if-none-match", format!("\"{v0}\""));
        tokio::spawn(async move { (request.send().await.unwrap(), Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long poll is held");
    let (new, v1) = rotate(&upstream, &pg, "orders", "poll-new").await;
    let refused = pg.connect("app", &old).await.unwrap_err();
    assert!(is_wrong_password(&refused), "{refused}");
    let refreshed = refresh_failing(&broker, "orders", &v0).await;
    let refreshed_at = Instant::now();
    assert_eq!(refreshed.status(), 200);
    assert_eq!(json_body(refreshed).await["password"], new.as_str());
    let (response, answered_at) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the held request is answered after the rotation")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), v1);
    let uri = response.text().await.unwrap();
    assert!(uri.starts_with("postgresql://app:"), "the format is kept");
    let woke = answered_at.saturating_duration_since(refreshed_at);
    assert!(
        woke < Duration::from_secs(1),
        "woke {woke:?} after the fetch"
    );
    eprintln!("FIGURE long poll: woken {woke:?} after the fetch that saw the rotation");
    pg.connect("app", &new)
        .await
        .expect("the new password connects");
    broker.assert_log_has_no_password();
}

/// An event stream's reader: events in order, comments counted, the whole text kept.
struct Events {
    response: reqwest::Response,
    buffer: String,
    text: String,
    comments: usize,
}

impl Events {
    async fn open(broker: &TestBroker, db: &str) -> Self {
        let url = broker.url(&format!("/credentials/{db}/events"));
        let response = broker
            .http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-store");
        Self {
            response,
            buffer: String::new(),
            text: String::new(),
            comments: 0,
        }
    }

    /// The next event's name and data, within `limit`; `None` when the stream ended.
    async fn next(&mut self, limit: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (None, None);
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(value).unwrap());
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return Some((name, data));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}; got {:?}", self.text))
                .unwrap()?;
            let chunk = String::from_utf8(chunk.to_vec()).unwrap();
            self.text.push_str(&chunk);
            self.buffer.push_str(&chunk);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_tells_each_rotation_in_order_without_a_password() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    seed_orders(&upstream, &pg, "events-old").await;
    let mut broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("orders", "orders", "")
        .spawn()
        .await;
    let v0 = etag(&broker.get("orders").await);
    let mut events = Events::open(&broker, "orders").await;
    let (name, data) = events.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(name, "version");
    assert_eq!(data["db"], "orders");
    assert_eq!(data["version_id"], v0.as_str());
    assert_eq!(data["stale"], false);
    humantime::parse_rfc3339(data["fetched_at"].as_str().unwrap()).expect("RFC 3339");
    assert_eq!(data.as_object().unwrap().len(), 4, "{data}");

    let mut seen = vec![v0.clone()];
    let mut previous = v0;
    for round in 0..2 {
        let (new, version) = rotate(&upstream, &pg, "orders", &format!("events-{round}")).await;
        let refreshed = refresh_failing(&broker, "orders", &previous).await;
        assert_eq!(json_body(refreshed).await["password"], new.as_str());
        let (name, data) = events.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(name, "version");
        assert_eq!(data["version_id"], version.as_str(), "round {round}");
        seen.push(version.clone());
        previous = version;
    }
    eprintln!("FIGURE event stream: versions in order {seen:?}");

    // A long poll held at the same time: SIGTERM answers it 304 and ends the stream at once.
    let poll = {
        let url = broker.url("/credentials/orders?wait=60s");
        let request = broker
            .http
            .get(url)
            .bearer_auth(TOKEN)
            .header("if-none-match", format!("\"{previous}\""));
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = Instant::now();
    broker.terminate();
    assert_eq!(
        events.next(Duration::from_secs(3)).await,
        None,
        "the stream ends"
    );
    let status = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the held request is answered at SIGTERM")
        .unwrap();
    assert_eq!(status, 304);
    let exit = broker.wait_exit(Duration::from_secs(5)).await;
    assert!(exit.success(), "{exit}");
    let drained = stopped.elapsed();
    assert!(
        drained < Duration::from_secs(2),
        "drained in {drained:?} (grace 5 s)"
    );
    eprintln!("FIGURE event stream + long poll: exit 0 {drained:?} after SIGTERM");
    for password in passwords() {
        assert!(!events.text.contains(&password), "a password on the stream");
    }
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_event_stream_carries_a_comment_and_is_scoped() {
    let upstream = Upstream::start().await;
    upstream
        .create_secret(
            "a",
            &json!({"username": "u", "password": new_password("idle")}),
        )
        .await;
    upstream
        .create_secret(
            "b",
            &json!({"username": "u", "password": new_password("idle-b")}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token_b = dir.path().join("token-b");
    std::fs::write(&token_b, "token-of-client-b-0123456789\n").unwrap();
    let mut options = BrokerOptions::new(upstream.proxy.endpoint())
        .database("a", "a", "")
        .database("b", "b", "");
    options.extra_toml = format!(
        "[clients.only_b]\ntoken_file = {:?}\ndatabases = [\"b\"]\n",
        token_b.display().to_string()
    );
    let broker = options.spawn().await;
    let url = broker.url("/credentials/a/events");
    let refused = broker
        .send(
            broker
                .http
                .get(url)
                .bearer_auth("token-of-client-b-0123456789"),
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json_body(refused).await["error"]["code"], "forbidden");

    let mut events = Events::open(&broker, "a").await;
    assert!(events.next(Duration::from_secs(5)).await.is_some());
    let started = Instant::now();
    while events.comments == 0 {
        let chunk = tokio::time::timeout(Duration::from_secs(16), events.response.chunk())
            .await
            .expect("a comment within 15 s")
            .unwrap()
            .expect("the stream stays open");
        let chunk = String::from_utf8(chunk.to_vec()).unwrap();
        events.comments += chunk.lines().filter(|l| l.starts_with(':')).count();
    }
    eprintln!(
        "FIGURE event stream: first comment after {:?}",
        started.elapsed()
    );
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(&metrics, "credential_broker_waiters", &[]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_have_their_own_cap_and_no_request_timeout() {
    let upstream = Upstream::start().await;
    upstream
        .create_secret(
            "orders",
            &json!({"username": "u", "password": new_password("cap")}),
        )
        .await;
    let mut options =
        BrokerOptions::new(upstream.proxy.endpoint()).database("orders", "orders", "");
    options.operation_timeout = "500ms";
    options.server_toml =
        "max_waiters = 5\nmax_concurrent_requests = 2\nrequest_timeout = \"1s\"".to_owned();
    let broker = std::sync::Arc::new(options.spawn().await);
    let version = etag(&broker.get("orders").await);

    for (wait, code) in [
        ("10m", "invalid_wait"),
        ("soon", "invalid_wait"),
        ("-1", "invalid_wait"),
    ] {
        let response = long_poll(&broker, "orders", wait, &version).await;
        assert_eq!(response.status(), 400, "wait={wait}");
        assert_eq!(json_body(response).await["error"]["code"], code);
    }

    // 15 held requests for 5 places: 10 are refused at once.
    let started = Instant::now();
    let polls: Vec<_> = (0..15)
        .map(|_| {
            let (broker, version) = (std::sync::Arc::clone(&broker), version.clone());
            tokio::spawn(async move {
                let response = long_poll(&broker, "orders", "3s", &version).await;
                (response.status().as_u16(), Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The 5 held ones take no place of max_concurrent_requests (2): plain reads go on.
    for _ in 0..5 {
        assert_eq!(broker.get("orders").await.status(), 200);
    }
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(&metrics, "credential_broker_waiters", &[]),
        Some(5.0)
    );
    let mut statuses = Vec::new();
    for poll in polls {
        let (status, at) = poll.await.unwrap();
        if status == 503 {
            assert!(at - started < Duration::from_millis(500), "refused at once");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    let held = started.elapsed();
    assert_eq!(statuses, [[304; 5].as_slice(), &[503; 10]].concat());
    // Held past request_timeout (1 s) for the whole 3 s wait, never 504.
    assert!(held >= Duration::from_secs(3), "{held:?}");
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(&metrics, "credential_broker_waiters", &[]),
        Some(0.0)
    );
    eprintln!("FIGURE waiters: 15 long polls for max_waiters = 5 -> {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_naming_the_cached_version_is_never_answered_with_it() {
    let upstream = Upstream::start().await;
    let old = new_password("refresh-old");
    let new = new_password("refresh-new");
    upstream
        .create_secret("orders", &json!({"username": "app", "password": old}))
        .await;
    let broker = std::sync::Arc::new(
        BrokerOptions::new(upstream.proxy.endpoint())
            .database("orders", "orders", "")
            .spawn()
            .await,
    );
    broker.wait_ready(Duration::from_secs(10)).await;
    let warmed = Instant::now();
    let v0 = etag(&broker.get("orders").await);
    let v1 = upstream
        .rotate("orders", &json!({"username": "app", "password": new}))
        .await;
    let before = upstream.proxy.count("GetSecretValue");

    // 100 applications whose logins just failed, well within refresh_min_interval (1 s).
    let refreshes: Vec<_> = (0..100)
        .map(|_| {
            let (broker, v0) = (std::sync::Arc::clone(&broker), v0.clone());
            tokio::spawn(async move { refresh_failing(&broker, "orders", &v0).await })
        })
        .collect();
    let since_warm_up = warmed.elapsed();
    for refresh in refreshes {
        let response = refresh.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(etag(&response), v1);
        assert_eq!(json_body(response).await["password"], new.as_str());
    }
    let calls = upstream.proxy.count("GetSecretValue") - before;
    assert!((1..=2).contains(&calls), "{calls} GetSecretValue calls");
    eprintln!(
        "FIGURE refresh of the cached version {since_warm_up:?} after warm-up: 100 concurrent -> \
         {calls} GetSecretValue, all the new version"
    );
}
