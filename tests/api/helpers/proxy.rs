//! A counting, delaying and fault-injecting HTTP proxy in front of moto, and `Upstream`: moto
//! behind the proxy with a Secrets Manager client for seeding.

use aws_sdk_secretsmanager::Client as SmClient;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use super::*;

/// What the fault proxy does with the requests it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward to moto.
    None,
    /// Close the connection without answering.
    Reset,
    /// Answer with this HTTP status and an empty JSON body.
    Status(u16),
    /// Answer 400 `ThrottlingException`, as Secrets Manager does when rate-limiting.
    Throttle,
    /// Answer `GetSecretValue` with this status and body (a broken or hostile endpoint); other
    /// operations are forwarded.
    GetSecretValue(u16, String),
    /// Forward to moto, and merge these fields into each `DescribeSecret` answer (moto keeps
    /// no `RotationRules` window, and sets `NextRotationDate` a week out).
    Describe(Value),
}

/// The proxy's shared knobs and records.
struct ProxyState {
    /// Requests seen, by `X-Amz-Target` (`GetSecretValue` for `AWSPENDING` counted apart, as
    /// `GetSecretValue#AWSPENDING`).
    counts: Mutex<HashMap<String, usize>>,
    /// When each `GetSecretValue` request for `AWSCURRENT` arrived.
    arrivals: Mutex<Vec<Instant>>,
    delay_ms: AtomicU64,
    fault: Mutex<Fault>,
    /// A fault for requests signed for one region only (the credential scope of their
    /// `Authorization` header), and requests counted by operation and region.
    region_fault: Mutex<Option<(String, Fault)>>,
    region_counts: Mutex<HashMap<String, usize>>,
    /// Texts replaced in every answer forwarded from moto (an RDS status moto never gives).
    rewrites: Mutex<Vec<(String, String)>>,
    /// When non-zero, STS `AssumeRole` answers say the credentials expire this many seconds
    /// from now (moto gives an hour, longer than a test).
    assumed_lifetime_s: AtomicU64,
}

/// A fault-injection HTTP proxy in front of moto: counts requests by `X-Amz-Target`, records
/// their arrival times, and can delay them, reset them, or answer errors or throttling.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            counts: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(Vec::new()),
            delay_ms: AtomicU64::new(0),
            fault: Mutex::new(Fault::None),
            assumed_lifetime_s: AtomicU64::new(0),
            region_fault: Mutex::new(None),
            region_counts: Mutex::new(HashMap::new()),
            rewrites: Mutex::new(Vec::new()),
        });
        let client: HyperClient<HttpConnector, Full<Bytes>> =
            HyperClient::builder(TokioExecutor::new()).build_http();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, state) = (client.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(request, upstream, client.clone(), Arc::clone(&state))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests with `X-Amz-Target: secretsmanager.<operation>` arrived; for
    /// `GetSecretValue`, those for `AWSCURRENT` (pass `GetSecretValue#AWSPENDING` for the others).
    pub fn count(&self, operation: &str) -> usize {
        let key = format!("secretsmanager.{operation}");
        let counts = self.state.counts.lock().unwrap();
        counts.get(&key).copied().unwrap_or(0)
    }

    /// How many query-protocol requests (STS, RDS) for `action` (`AssumeRole`, ...) arrived.
    pub fn count_action(&self, action: &str) -> usize {
        let counts = self.state.counts.lock().unwrap();
        counts.get(&format!("query.{action}")).copied().unwrap_or(0)
    }

    /// Applies `fault` to the requests signed for `region` only; `None` ends it.
    pub fn set_region_fault(&self, fault: Option<(&str, Fault)>) {
        *self.state.region_fault.lock().unwrap() =
            fault.map(|(region, fault)| (region.to_owned(), fault));
    }

    /// How many `X-Amz-Target: secretsmanager.<operation>` requests signed for `region` arrived.
    pub fn count_in(&self, operation: &str, region: &str) -> usize {
        let key = format!("secretsmanager.{operation}@{region}");
        self.state
            .region_counts
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Replaces each `(from, to)` text in every answer forwarded from moto; empty: none.
    pub fn set_rewrites(&self, rewrites: &[(&str, &str)]) {
        *self.state.rewrites.lock().unwrap() = rewrites
            .iter()
            .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
            .collect();
    }

    /// Makes STS `AssumeRole` answers say their credentials expire `lifetime` from now.
    pub fn set_assumed_lifetime(&self, lifetime: Duration) {
        self.state
            .assumed_lifetime_s
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    /// When each `GetSecretValue` request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Delays every later request by `delay` before handling it.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Applies `fault` to every later request.
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    request: hyper::Request<Incoming>,
    upstream: SocketAddr,
    client: HyperClient<HttpConnector, Full<Bytes>>,
    state: Arc<ProxyState>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    // JSON protocol services name the operation in a header, query protocol ones (STS, RDS)
    // in the form body.
    let action = || {
        url::form_urlencoded::parse(&body)
            .find(|(key, _)| key == "Action")
            .map(|(_, action)| format!("query.{action}"))
    };
    let mut target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(action)
        .unwrap_or_else(|| "other".to_owned());
    if String::from_utf8_lossy(&body).contains("AWSPENDING") {
        target.push_str("#AWSPENDING");
    }
    let mut request = hyper::Request::from_parts(parts, Full::new(body));
    if target == "secretsmanager.GetSecretValue" {
        state.arrivals.lock().unwrap().push(Instant::now());
    }
    *state
        .counts
        .lock()
        .unwrap()
        .entry(target.clone())
        .or_default() += 1;
    let region = signed_region(request.headers()).unwrap_or_default();
    *state
        .region_counts
        .lock()
        .unwrap()
        .entry(format!("{target}@{region}"))
        .or_default() += 1;
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let answer = |status: u16, body: &'static str| {
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap())
    };
    let fault = match &*state.region_fault.lock().unwrap() {
        Some((faulty, fault)) if *faulty == region => fault.clone(),
        _ => state.fault.lock().unwrap().clone(),
    };
    match fault {
        // An error from the service makes hyper drop the connection without a response.
        Fault::Reset => return Err(std::io::Error::other("injected reset")),
        Fault::Status(status) => return answer(status, "{}"),
        Fault::Throttle => {
            let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            return answer(400, body);
        }
        Fault::GetSecretValue(status, body) if target == "secretsmanager.GetSecretValue" => {
            return Ok(hyper::Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.1")
                .body(Full::new(Bytes::from(body)))
                .unwrap());
        }
        Fault::None | Fault::GetSecretValue(..) | Fault::Describe(_) => {}
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .to_owned();
    *request.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
    match client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let collected = body.collect().await;
            let mut bytes = collected
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            if let Fault::Describe(fields) = &fault
                && target == "secretsmanager.DescribeSecret"
                && let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&bytes)
            {
                for (key, value) in fields.as_object().expect("Describe takes an object") {
                    answer.insert(key.clone(), value.clone());
                }
                bytes = Bytes::from(Value::Object(answer).to_string());
            }
            let rewrites = state.rewrites.lock().unwrap().clone();
            if !rewrites.is_empty() {
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                for (from, to) in &rewrites {
                    text = text.replace(from, to);
                }
                bytes = Bytes::from(text);
            }
            let lifetime = state.assumed_lifetime_s.load(Ordering::SeqCst);
            if lifetime > 0 && target == "query.AssumeRole" {
                bytes = with_expiration(&bytes, Duration::from_secs(lifetime));
            }
            let mut parts = parts;
            parts.headers.remove("content-length");
            Ok(hyper::Response::from_parts(parts, Full::new(bytes)))
        }
        Err(_) => answer(502, "{}"),
    }
}

/// The region a request is signed for: the third field of its `SigV4` credential scope.
fn signed_region(headers: &hyper::HeaderMap) -> Option<String> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let scope = authorization.split("Credential=").nth(1)?;
    Some(scope.split('/').nth(2)?.to_owned())
}

/// An STS answer with its `<Expiration>` set to `lifetime` from now.
fn with_expiration(answer: &[u8], lifetime: Duration) -> Bytes {
    let text = String::from_utf8_lossy(answer);
    let (Some(start), Some(end)) = (text.find("<Expiration>"), text.find("</Expiration>")) else {
        return Bytes::copy_from_slice(answer);
    };
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + lifetime);
    Bytes::from(format!(
        "{}<Expiration>{at}{}",
        &text[..start],
        &text[end..]
    ))
}

/// moto plus a counting proxy plus a seeding client: the upstream side of one test.
pub struct Upstream {
    pub moto: Moto,
    pub proxy: Proxy,
    pub sm: SmClient,
    pub rds: aws_sdk_rds::Client,
}

impl Upstream {
    pub async fn start() -> Self {
        let moto = Moto::start().await;
        let proxy = Proxy::start(moto.addr).await;
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
            .endpoint_url(format!("http://{}", moto.addr))
            .build();
        let rds = aws_sdk_rds::Config::builder()
            .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
            .region(aws_sdk_rds::config::Region::new("us-east-1"))
            .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
            .endpoint_url(format!("http://{}", moto.addr))
            .build();
        Self {
            sm: SmClient::from_conf(config),
            rds: aws_sdk_rds::Client::from_conf(rds),
            moto,
            proxy,
        }
    }

    /// Creates a PostgreSQL RDS instance whose master password RDS keeps in Secrets Manager
    /// (moto makes the `rds!db-…` secret).
    pub async fn create_managed_instance(&self, id: &str) {
        self.rds
            .create_db_instance()
            .db_instance_identifier(id)
            .engine("postgres")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .master_username("admin_user")
            .manage_master_user_password(true)
            .send()
            .await
            .expect("create_db_instance in moto");
    }

    /// Creates a secret whose `SecretString` is `value` and returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &Value) -> String {
        self.create_secret_string(name, &value.to_string()).await
    }

    pub async fn create_secret_string(&self, name: &str, text: &str) -> String {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .secret_string(text)
            .send()
            .await
            .expect("create_secret in moto");
        out.arn.expect("moto returns an ARN")
    }

    /// Stores a new AWSCURRENT version of `name` (a rotation as moto can simulate it) and returns
    /// the new version id.
    pub async fn rotate(&self, name: &str, value: &Value) -> String {
        let out = self
            .sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("put_secret_value in moto");
        out.version_id.expect("moto returns a version id")
    }

    /// The first stage of a rotation: `value` stored as the AWSPENDING version (AWSCURRENT stays
    /// where it is). Returns the new version id.
    pub async fn put_pending(&self, name: &str, value: &Value) -> String {
        let out = self
            .sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.to_string())
            .version_stages("AWSPENDING")
            .send()
            .await
            .expect("put_secret_value AWSPENDING in moto");
        out.version_id.expect("moto returns a version id")
    }

    /// The last stage of a rotation: AWSCURRENT moved to `version` (the old current becomes
    /// AWSPREVIOUS).
    pub async fn promote(&self, name: &str, version: &str) {
        let described = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .expect("describe_secret in moto");
        let current = described
            .version_ids_to_stages()
            .into_iter()
            .flatten()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.clone())
            .expect("a current version");
        self.sm
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(version)
            .remove_from_version_id(current)
            .send()
            .await
            .expect("update_secret_version_stage in moto");
    }
}
