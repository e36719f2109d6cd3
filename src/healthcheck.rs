//! The `healthcheck` subcommand's probe: one `GET /readyz` to a running broker's admin listener,
//! so container health checks need no curl in a distroless image; and the one GET both it and
//! the `status` subcommand make.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a probe failed; the subcommand prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0} is not an http:// URL with a host and port")]
    BadUrl(String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP exchange with {0} failed: {1}")]
    Http(String, hyper::Error),
    #[error("{0} answered {1}")]
    NotReady(String, StatusCode),
    #[error("the answer of {0} is longer than {MAX_ANSWER} bytes or cut short")]
    Body(String),
}

/// The longest answer read (a status of some 10,000 databases).
const MAX_ANSWER: usize = 4 << 20;

/// The readiness URL of the admin listener at `admin`.
pub fn readiness_url(admin: SocketAddr) -> String {
    format!("{}/readyz", admin_url(admin))
}

/// The base URL of the admin listener at `admin`: a wildcard address is reached on loopback.
pub fn admin_url(admin: SocketAddr) -> String {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, admin.port()))
}

/// Sends `GET url` and succeeds only on a 200 answer within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    get(url, timeout).await.map(drop)
}

/// Sends `GET url` and returns the body of a 200 answer within `timeout` (at most
/// [`MAX_ANSWER`] bytes); any other status is an error.
pub async fn get(url: &str, timeout: Duration) -> Result<Bytes, ProbeError> {
    let uri: Uri = url.parse().map_err(|_| ProbeError::BadUrl(url.into()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return Err(ProbeError::BadUrl(url.into()));
    };
    let Some(port) = authority.port_u16() else {
        return Err(ProbeError::BadUrl(url.into()));
    };
    let exchange = async {
        let stream = TcpStream::connect((authority.host().trim_matches(['[', ']']), port))
            .await
            .map_err(|e| ProbeError::Connect(url.into(), e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProbeError::Http(url.into(), e))?;
        tokio::spawn(connection);
        let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())
            .expect("a request from a parsed URI is valid");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ProbeError::Http(url.into(), e))?;
        match response.status() {
            StatusCode::OK => Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .map_err(|_| ProbeError::Body(url.into())),
            status => Err(ProbeError::NotReady(url.into(), status)),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout(url.into(), timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_admin_addresses_are_probed_on_loopback() {
        assert_eq!(
            readiness_url("0.0.0.0:2776".parse().unwrap()),
            "http://127.0.0.1:2776/readyz"
        );
        assert_eq!(
            readiness_url("[::]:9".parse().unwrap()),
            "http://[::1]:9/readyz"
        );
        assert_eq!(
            readiness_url("127.0.0.2:80".parse().unwrap()),
            "http://127.0.0.2:80/readyz"
        );
    }

    #[tokio::test]
    async fn urls_that_are_not_plain_http_are_refused_before_any_connection() {
        for url in [
            "https://127.0.0.1:1/readyz",
            "127.0.0.1:1",
            "http://localhost/",
        ] {
            assert!(
                matches!(
                    probe(url, Duration::from_secs(1)).await,
                    Err(ProbeError::BadUrl(_))
                ),
                "{url}"
            );
        }
    }
}
