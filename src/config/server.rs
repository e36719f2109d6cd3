//! `[server]`: the listeners (TCP, Unix socket, admin), the drain grace and the limits of the
//! credentials API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, HOUR, MINUTE, MS, SECOND, duration_in, invalid, number_in};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the credentials API on TCP; `None` when it listens on a Unix socket only.
    pub listen: Option<SocketAddr>,
    /// The credentials API on a Unix domain socket, alongside or instead of TCP.
    pub unix_socket: Option<UnixSocketConfig>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    pub limits: Limits,
    /// `/readyz` is 503 until every sink holds the version served (and while one cannot be
    /// written).
    pub sinks_required_for_ready: bool,
}

/// A Unix domain socket for the credentials API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketConfig {
    pub path: PathBuf,
    /// Permission bits of the socket file (connecting needs write permission).
    pub mode: u32,
    /// Group id given to the socket file, so that one group's members may connect.
    pub group: Option<u32>,
}

/// Overload and input limits of the credentials API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Requests in progress at most; more are answered 503 `overloaded` at once.
    pub max_concurrent_requests: usize,
    /// Longest time one request may take before it is answered 504 `request_timeout`.
    pub request_timeout: Duration,
    /// Largest total size of a request's header names and values.
    pub max_header_bytes: usize,
    /// Largest declared request body.
    pub max_body_bytes: u64,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Held requests (long polls, event streams) at most; more are answered 503 `overloaded`.
    pub max_waiters: usize,
    /// Longest `wait` of a long poll.
    pub max_wait: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    /// A socket address, or `off` for a Unix socket only.
    listen: String,
    unix_socket: Option<RawUnixSocket>,
    admin_listen: SocketAddr,
    allow_non_loopback: bool,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    max_connections: usize,
    max_concurrent_requests: usize,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    max_header_bytes: usize,
    max_body_bytes: u64,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    /// Unset: [`Limits::default`]'s, at most half of `max_connections`.
    max_waiters: Option<usize>,
    #[serde(with = "humantime_serde")]
    max_wait: Duration,
    sinks_required_for_ready: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Room for `max_waiters` held requests and as many others.
            max_connections: 2048,
            max_concurrent_requests: 256,
            request_timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            max_body_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(5),
            max_waiters: 1024,
            max_wait: Duration::from_mins(5),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            listen: "127.0.0.1:2775".to_owned(),
            unix_socket: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 2776)),
            allow_non_loopback: false,
            shutdown_grace: Duration::from_secs(10),
            max_connections: limits.max_connections,
            max_concurrent_requests: limits.max_concurrent_requests,
            request_timeout: limits.request_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_body_bytes: limits.max_body_bytes,
            header_read_timeout: limits.header_read_timeout,
            max_waiters: None,
            max_wait: limits.max_wait,
            sinks_required_for_ready: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnixSocket {
    path: PathBuf,
    /// Octal permission bits, as a string: `"0660"`.
    #[serde(default = "default_socket_mode")]
    mode: String,
    group: Option<u32>,
}

fn default_socket_mode() -> String {
    "0660".to_owned()
}

impl RawServer {
    /// Checks the section; `serves_otherwise` (sinks, the AWS agent's API) allows a broker with
    /// no credentials API at all.
    pub(super) fn validate(self, serves_otherwise: bool) -> Result<ServerConfig, ConfigError> {
        let listen = match self.listen.trim() {
            "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "server.listen",
                    format!("{text:?} is not an address such as 127.0.0.1:2775, nor \"off\""),
                )
            })?),
        };
        if let Some(listen) = listen
            && !listen.ip().is_loopback()
            && !self.allow_non_loopback
        {
            return Err(invalid(
                "server.listen",
                format!(
                    "{listen} is not a loopback address; the credentials API stays on loopback unless server.allow_non_loopback = true"
                ),
            ));
        }
        let unix_socket = self.unix_socket.map(RawUnixSocket::validate).transpose()?;
        // With neither, the broker only keeps its sinks' files current (or serves the agent's API).
        if listen.is_none() && unix_socket.is_none() && !serves_otherwise {
            return Err(invalid(
                "server.listen",
                "\"off\" needs server.unix_socket, [[sinks]] or [compat.aws_agent], or the broker would serve nothing",
            ));
        }
        number_in("server.max_connections", self.max_connections, 1, 65_536)?;
        number_in(
            "server.max_concurrent_requests",
            self.max_concurrent_requests,
            1,
            65_536,
        )?;
        // Held requests keep their connections: some must be left for everything else.
        let max_waiters = match self.max_waiters {
            None => Limits::default()
                .max_waiters
                .min(self.max_connections / 2)
                .max(1),
            Some(n) => {
                number_in("server.max_waiters", n, 1, 65_536)?;
                if n >= self.max_connections {
                    return Err(invalid(
                        "server.max_waiters",
                        format!(
                            "must be below server.max_connections ({}): held requests keep their connections",
                            self.max_connections
                        ),
                    ));
                }
                n
            }
        };
        duration_in("server.max_wait", self.max_wait, SECOND, HOUR)?;
        number_in("server.max_header_bytes", self.max_header_bytes, 1, 1 << 20)?;
        number_in("server.max_body_bytes", self.max_body_bytes, 0, 1 << 20)?;
        duration_in(
            "server.request_timeout",
            self.request_timeout,
            100 * MS,
            10 * MINUTE,
        )?;
        duration_in(
            "server.header_read_timeout",
            self.header_read_timeout,
            100 * MS,
            MINUTE,
        )?;
        duration_in(
            "server.shutdown_grace",
            self.shutdown_grace,
            Duration::ZERO,
            10 * MINUTE,
        )?;
        Ok(ServerConfig {
            listen,
            unix_socket,
            admin_listen: self.admin_listen,
            shutdown_grace: self.shutdown_grace,
            sinks_required_for_ready: self.sinks_required_for_ready,
            limits: Limits {
                max_connections: self.max_connections,
                max_concurrent_requests: self.max_concurrent_requests,
                request_timeout: self.request_timeout,
                max_header_bytes: self.max_header_bytes,
                max_body_bytes: self.max_body_bytes,
                header_read_timeout: self.header_read_timeout,
                max_waiters,
                max_wait: self.max_wait,
            },
        })
    }
}

impl RawUnixSocket {
    fn validate(self) -> Result<UnixSocketConfig, ConfigError> {
        let mode = u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "server.unix_socket.mode",
                    "octal permission bits such as \"0660\"",
                )
            })?;
        if mode & 0o002 != 0 {
            return Err(invalid(
                "server.unix_socket.mode",
                "must not let every local user connect (no world write bit)",
            ));
        }
        if self.path.as_os_str().is_empty() || !self.path.is_absolute() {
            return Err(invalid(
                "server.unix_socket.path",
                "must be an absolute path",
            ));
        }
        Ok(UnixSocketConfig {
            path: self.path,
            mode,
            group: self.group,
        })
    }
}
