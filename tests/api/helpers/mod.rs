//! Shared test harness, split by concern: a real moto server per test (`moto`), a counting (and
//! delaying, fault-injecting) proxy in front of it (`proxy`), the real broker binary (`broker`),
//! reading its metrics (`metrics`), and a real Prometheus scraping it (`prometheus`); here, what
//! they all share.

mod broker;
mod metrics;
mod moto;
mod prometheus;
mod proxy;

pub use broker::*;
pub use metrics::*;
pub use moto::*;
pub use prometheus::*;
pub use proxy::*;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The bearer token every test broker is configured with.
pub const TOKEN: &str = "integration-test-token-5f2c9a";

/// The unique core of every password handed to moto by any test in this binary; broker logs must
/// contain none. The core has no character that any escaping (JSON, URI, shell) would change.
static PASSWORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A fresh password with characters that need escaping in JSON, URIs and shells, recorded so that
/// every broker log can be checked for it.
pub fn new_password(tag: &str) -> String {
    new_password_ending(tag, "!#$%&'()*+,/:;=?@[]~\"\\")
}

/// A fresh password ending in `tail`, its unique core recorded like [`new_password`]'s.
pub fn new_password_ending(tag: &str, tail: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let core = format!("Pw-{tag}-{n}-{nanos:x}");
    PASSWORDS.lock().unwrap().push(core.clone());
    format!("{core}{tail}")
}

/// The unique cores of the passwords made so far.
pub fn passwords() -> Vec<String> {
    PASSWORDS.lock().unwrap().clone()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A JSON body as a `Value`, asserting the content type on the way.
pub async fn json_body(response: reqwest::Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    response.json().await.unwrap()
}

/// Sends `request` as raw bytes on a new connection to `addr` and returns everything the server
/// wrote until it closed the connection or `limit` passed (write errors are ignored: a server may
/// answer and close before it has read everything).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return Vec::new();
    };
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    answer
}
