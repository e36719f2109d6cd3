//! A real Prometheus server of a test's own, scraping a broker's admin listener every second.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The scrape job's name, as docker/prometheus/prometheus.yml names it.
pub const JOB: &str = "credential-broker";

/// A `prometheus` server of this test's own on a free loopback port, killed on drop.
pub struct Prometheus {
    url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second as job `credential-broker`.
    pub fn start(target: &str) -> Self {
        let binary = std::env::var_os("PROMETHEUS")
            .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
        assert!(
            binary.is_file(),
            "prometheus not found at {}: run `bash .ci/setup` or `apt-get install prometheus` \
             (Debian's package), or set PROMETHEUS to a prometheus binary",
            binary.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        }
    }

    /// Polls an instant query until its single sample has `expected` as value (bounded).
    pub async fn wait_for(&mut self, query: &str, expected: f64, limit: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}: {}", self.log_text());
            }
            if let Ok(response) = client
                .get(format!("{}/api/v1/query", self.url))
                .query(&[("query", query)])
                .send()
                .await
                && let Ok(body) = response.json::<Value>().await
            {
                let value = body
                    .pointer("/data/result/0/value/1")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<f64>().ok());
                if body["data"]["result"].as_array().map(Vec::len) == Some(1)
                    && value == Some(expected)
                {
                    return;
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "`{query}` did not return {expected} within {limit:?}; last answer: {last}\n{}",
            self.log_text()
        );
    }

    /// The answer of an instant query: `data` of a success, the whole body of an error, `null`
    /// while Prometheus does not answer yet.
    pub async fn query(&self, query: &str) -> Value {
        let answer = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await;
        let Ok(body) = answer else {
            return Value::Null;
        };
        let body: Value = body.json().await.unwrap_or_default();
        if body["status"] == "success" {
            body["data"].clone()
        } else {
            body
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
