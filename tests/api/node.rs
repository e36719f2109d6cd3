//! The node-level mode's configuration as docker/k8s/node ships it, run for real: one broker,
//! one Unix socket, two workloads told apart by their uids (as `runAsUser` sets them), each
//! reading only its own databases; a uid no client names gets 401, a process outside the
//! socket's group cannot connect.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// The socket's group and the two workloads' uids, as docker/k8s/node sets them.
const GROUP: u32 = 2775;
const ORDERS_UID: u32 = 1001;
const REPORTING_UID: u32 = 1002;

/// The node `ConfigMap`'s `config.toml`, with what only exists in a cluster moved: the socket
/// directory, the admin port, the AWS endpoint, and the databases (secrets in moto). Each
/// replaced text must be there, so the test follows the file.
fn node_config(socket_dir: &str, endpoint: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("docker/k8s/node/configmap.yaml")).unwrap();
    let map: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let config = map["data"]["config.toml"].as_str().unwrap().to_owned();
    let replace = |config: String, from: &str, to: &str| {
        assert!(
            config.contains(from),
            "{from:?} is no longer in the node configuration"
        );
        config.replace(from, to)
    };
    let config = replace(config, "/run/credential-broker", socket_dir);
    let config = replace(
        config,
        "admin_listen = \"0.0.0.0:2776\"",
        "admin_listen = \"127.0.0.1:0\"",
    );
    let config = replace(
        config,
        "region = \"eu-central-1\"",
        &format!("region = \"us-east-1\"\nendpoint_url = {endpoint:?}"),
    );
    let databases = config
        .find("[databases.")
        .expect("databases in the node configuration");
    format!(
        "{}[databases.orders]\nsecret_id = \"node/orders\"\n[databases.analytics]\nsecret_id = \"node/analytics\"\n",
        &config[..databases]
    )
}

/// curl over the socket as `uid` with `groups`; the HTTP status (0: could not connect).
fn curl_as(uid: u32, groups: &[u32], socket: &std::path::Path, path: &str) -> u16 {
    let groups: Vec<String> = groups.iter().map(ToString::to_string).collect();
    let mut setpriv = Command::new("setpriv");
    setpriv
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        setpriv.arg("--clear-groups");
    } else {
        setpriv.arg(format!("--groups={}", groups.join(",")));
    }
    curl_unix_status(setpriv, socket, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workloads_on_one_node_socket_each_read_only_their_own_databases() {
    let upstream = Upstream::start().await;
    for name in ["node/orders", "node/analytics"] {
        upstream
            .create_secret(
                name,
                &json!({"username": "app", "password": new_password("node")}),
            )
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    // The socket directory as the DaemonSet's init container leaves it: the broker's, group
    // 2775, mode 0750 (here the broker runs as root).
    let socket_dir = dir.path().join("run");
    std::fs::create_dir(&socket_dir).unwrap();
    std::os::unix::fs::chown(&socket_dir, None, Some(GROUP)).unwrap();
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config(socket_dir.to_str().unwrap(), &upstream.proxy.endpoint()),
    )
    .unwrap();
    let log = dir.path().join("broker.log");
    let broker = TestBroker::from_command(broker_command(&config, &log), log, dir).await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let socket = socket_dir.join("api.sock");

    assert_eq!(
        curl_as(ORDERS_UID, &[GROUP], &socket, "/credentials/orders"),
        200
    );
    assert_eq!(
        curl_as(ORDERS_UID, &[GROUP], &socket, "/credentials/analytics"),
        403
    );
    assert_eq!(
        curl_as(REPORTING_UID, &[GROUP], &socket, "/credentials/analytics"),
        200
    );
    assert_eq!(
        curl_as(REPORTING_UID, &[GROUP], &socket, "/credentials/orders"),
        403
    );
    assert_eq!(
        curl_as(1003, &[GROUP], &socket, "/credentials/orders"),
        401,
        "a uid no client names"
    );
    assert_eq!(
        curl_as(ORDERS_UID, &[], &socket, "/credentials/orders"),
        0,
        "outside the socket's group the directory and socket modes keep it out"
    );
    // The audit trail (written in the background) names the workload of each read.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !["\"orders_api\"", "\"reporting\""]
        .iter()
        .all(|client| broker.log_text().contains(client))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no audit events naming both clients:\n{}",
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
