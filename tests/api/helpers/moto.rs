//! A real moto server per test, on a free loopback port, stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

fn moto_server_binary() -> PathBuf {
    let path = std::env::var_os("MOTO_SERVER").map_or_else(
        || repo_root().join(".venv/moto/bin/moto_server"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "moto server not found at {}: run `bash .ci/setup` (installs moto 5.2.5 into .venv/moto) \
         or set MOTO_SERVER to a moto_server binary",
        path.display()
    );
    path
}

/// A moto server process of this test's own, killed on drop.
pub struct Moto {
    pub addr: SocketAddr,
    child: Child,
}

impl Moto {
    pub async fn start() -> Self {
        let binary = moto_server_binary();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut moto = Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
            };
            if moto.wait_ready().await {
                return moto;
            }
        }
        panic!("moto server did not become ready on any of 5 ports");
    }

    async fn wait_ready(&mut self) -> bool {
        let url = format!("http://{}/moto-api/", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes moto (SIGSTOP): connections are accepted by the kernel but never answered.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    /// Resumes a frozen moto (SIGCONT).
    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        signal(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
