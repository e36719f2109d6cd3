//! Credentials for one database as the broker serves them: the login (the password held as a
//! `SecretString`, with a redacted `Debug`), the endpoint, the version, and the response bodies
//! rendered from them, once per format.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use enum_map::EnumMap;
use secrecy::{ExposeSecret, SecretString};

use super::endpoint::Endpoint;
use super::format::{Format, RenderError};
use super::iam::{Auth, AuthToken};
use super::names::DbName;
use super::secret::{self, MalformedSecret, SecretVersion};

/// The values `MasterUserSecret.SecretStatus` (an RDS database's [`Credentials::secret_status`])
/// takes.
pub const SECRET_STATUSES: [&str; 4] = ["creating", "active", "rotating", "impaired"];

/// The credentials of a version a rotation is putting in place (`AWSPENDING`).
#[derive(Debug)]
pub struct Pending {
    pub username: String,
    password: SecretString,
    pub version_id: String,
}

impl Pending {
    /// The pending password; only response rendering should call this.
    pub(crate) fn password(&self) -> &str {
        self.password.expose_secret()
    }
}

/// Credentials for one database, ready to hand to a client.
pub struct Credentials {
    pub db: DbName,
    /// A stored password, or an IAM auth token.
    pub auth: Auth,
    /// When the password stops working: an IAM token's expiry; `None` for stored passwords.
    pub expires_at: Option<SystemTime>,
    /// The AWS region that served them (a fallback region during a failover); `None` for the
    /// file source.
    pub region: Option<String>,
    pub endpoint: Endpoint,
    pub username: String,
    password: SecretString,
    pub version_id: String,
    pub secret_arn: Option<String>,
    pub fetched_at: SystemTime,
    /// `MasterUserSecret.SecretStatus` for RDS databases.
    pub secret_status: Option<String>,
    /// The pending version during a rotation, if one was seen.
    pub pending: Option<Pending>,
    /// Monotonic time of the fetch, for comparing with request arrival times.
    pub(crate) fetched: Instant,
    /// The `ETag` value: the version id in quotes.
    etag: Bytes,
    /// Response bodies, each rendered on first use; the value never changes once built.
    pub(super) bodies: Bodies,
}

/// A lazily rendered body.
pub(super) type Body = OnceLock<Result<Bytes, RenderError>>;

/// One lazily rendered body per format, plus the stale variant of the JSON body: keyed by
/// [`Format`], so a new format has its place without a change here.
#[derive(Default)]
pub(super) struct Bodies {
    by_format: EnumMap<Format, Body>,
    stale_json: Body,
}

impl Bodies {
    pub(super) fn slot(&self, format: Format, stale: bool) -> &Body {
        if stale && format == Format::Json {
            &self.stale_json
        } else {
            &self.by_format[format]
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("db", &self.db)
            .field("auth", &self.auth)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("version_id", &self.version_id)
            .field("secret_arn", &self.secret_arn)
            .field("secret_status", &self.secret_status)
            .field(
                "pending_version",
                &self.pending.as_ref().map(|p| &p.version_id),
            )
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses a fetched secret for `db`. The secret's connection fields win; `fallback` (the
    /// configuration's, completed by RDS's) fills what the secret lacks.
    pub fn from_secret(
        db: DbName,
        fallback: Endpoint,
        secret_status: Option<String>,
        secret: SecretVersion,
    ) -> Result<Self, MalformedSecret> {
        let (login, endpoint) = secret::login_and_endpoint(&secret.payload)?;
        Ok(Self {
            db,
            auth: Auth::Password,
            expires_at: None,
            region: None,
            endpoint: endpoint.or(fallback),
            username: login.username,
            password: login.password,
            secret_arn: secret.arn,
            fetched_at: SystemTime::now(),
            secret_status,
            pending: None,
            fetched: Instant::now(),
            etag: Bytes::from(format!("\"{}\"", secret.version_id)),
            version_id: secret.version_id,
            bodies: Bodies::default(),
        })
    }

    /// Credentials of an IAM auth token for `db` at `endpoint`.
    pub fn from_token(db: DbName, endpoint: Endpoint, token: AuthToken) -> Self {
        let version_id = token.version_id();
        Self {
            db,
            auth: Auth::Iam,
            expires_at: Some(token.expires_at),
            region: None,
            endpoint,
            fetched_at: token.signed_at,
            username: token.username.clone(),
            password: token.into_secret(),
            secret_arn: None,
            secret_status: None,
            pending: None,
            fetched: Instant::now(),
            etag: Bytes::from(format!("\"{version_id}\"")),
            version_id,
            bodies: Bodies::default(),
        }
    }

    /// How long the password works from the fetch: `None` for a stored password, which works
    /// until a rotation.
    pub fn valid_for(&self) -> Option<Duration> {
        self.expires_at
            .map(|at| at.duration_since(self.fetched_at).unwrap_or_default())
    }

    /// Adds the pending version of a rotation, unless it is the current version itself.
    pub fn with_pending(mut self, secret: SecretVersion) -> Result<Self, MalformedSecret> {
        if secret.version_id != self.version_id {
            let login = secret::login(&secret.payload)?;
            self.pending = Some(Pending {
                username: login.username,
                password: login.password,
                version_id: secret.version_id,
            });
        }
        Ok(self)
    }

    /// The password; only response rendering should call this.
    pub(crate) fn password(&self) -> &str {
        self.password.expose_secret()
    }

    /// The `ETag` of these credentials: their version id, quoted.
    pub fn etag(&self) -> &Bytes {
        &self.etag
    }
}
