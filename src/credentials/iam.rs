//! RDS IAM authentication tokens as credentials: a token signed for one database user, valid
//! for a bounded time, served as the password.

use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// How clients log in with the credentials served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A stored password.
    Password,
    /// An RDS IAM authentication token, which needs TLS (and MySQL's cleartext plugin).
    Iam,
}

impl Auth {
    /// The name the JSON body gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Iam => "iam",
        }
    }
}

/// A signed RDS IAM authentication token for one user. Its `Debug` shows no token.
pub struct AuthToken {
    pub username: String,
    token: SecretString,
    /// The signing time, whole seconds (the token's `X-Amz-Date`).
    pub signed_at: SystemTime,
    /// When RDS stops taking it: 15 minutes after signing, or sooner when the AWS credentials
    /// it was signed with expire sooner.
    pub expires_at: SystemTime,
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthToken")
            .field("username", &self.username)
            .field("token", &"[REDACTED]")
            .field("signed_at", &self.signed_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AuthToken {
    pub fn new(
        username: String,
        token: String,
        signed_at: SystemTime,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            username,
            token: SecretString::from(token),
            signed_at,
            expires_at,
        }
    }

    pub(crate) fn token(&self) -> &str {
        self.token.expose_secret()
    }

    pub(crate) fn into_secret(self) -> SecretString {
        self.token
    }

    /// How long the token is valid from its signing.
    pub fn valid_for(&self) -> Duration {
        self.expires_at
            .duration_since(self.signed_at)
            .unwrap_or_default()
    }

    /// The version id the token is served under: `iam-` with its signing time and the first 8
    /// hex digits of its SHA-256, so each token has its own and none shows the token.
    pub fn version_id(&self) -> String {
        let digest = Sha256::digest(self.token().as_bytes());
        let mut id = format!("iam-{}-", signing_time(self.signed_at));
        for byte in &digest[..4] {
            write!(id, "{byte:02x}").expect("writing to a String cannot fail");
        }
        id
    }
}

/// `20261204T181500Z`: a time as `X-Amz-Date` writes it.
pub fn signing_time(at: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(at).to_string();
    rfc.chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_redacted_and_its_version_id_tells_time_and_digest_only() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_hours(499_000);
        let token = AuthToken::new(
            "app".into(),
            "db:5432/?Action=connect&X-Amz-Signature=abcdef".into(),
            at,
            at + Duration::from_mins(15),
        );
        assert!(!format!("{token:?}").contains("Signature"));
        assert_eq!(token.valid_for(), Duration::from_mins(15));
        let id = token.version_id();
        assert!(id.starts_with("iam-20261204T160000Z-"), "{id}");
        assert_eq!(id.len(), "iam-20261203T000000Z-".len() + 8, "{id}");
        assert!(!id.contains("abcdef"));
    }
}
