//! The callers of the credentials API: who presents which token (or connects with which Unix
//! uid) and which databases each may read. Tokens are kept only as SHA-256 digests, compared in
//! constant time, and token files are re-read so that a rotated token takes effect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tracing::{info, warn};

use crate::config::{ClientConfig, Scope, TokenSource, read_token_file};

/// A recognised caller.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    pub scope: Scope,
    /// Its position among the configured clients (0 for the anonymous caller).
    pub(crate) index: usize,
    uids: Vec<u32>,
}

impl Client {
    /// The caller when authentication is disabled: may read every database.
    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self {
            name: "anonymous".to_owned(),
            scope: Scope::All,
            index: 0,
            uids: Vec::new(),
        })
    }
}

/// A token as its digest, so the broker holds no usable copy of it.
#[derive(Clone, Copy)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// The current token of each client that has one, by client index.
struct Tokens(Vec<(usize, TokenDigest)>);

/// Every configured client, with tokens that can be replaced while the broker runs.
pub struct Clients {
    all: Vec<Arc<Client>>,
    tokens: ArcSwap<Tokens>,
    /// Token files to re-read, by client index.
    files: Vec<(usize, PathBuf)>,
    reload_interval: Duration,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("clients", &self.all)
            .field("token_files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Clients {
    pub fn new(configs: Vec<ClientConfig>, reload_interval: Duration) -> Self {
        let mut clients = Vec::new();
        let mut tokens = Vec::new();
        let mut files = Vec::new();
        for (index, config) in configs.into_iter().enumerate() {
            if let Some(token) = &config.token {
                tokens.push((index, TokenDigest::of(token.value.expose_secret())));
                if let TokenSource::File(path) = &token.source {
                    files.push((index, path.clone()));
                }
            }
            clients.push(Arc::new(Client {
                name: config.name,
                scope: config.scope,
                index,
                uids: config.unix_uids,
            }));
        }
        Self {
            all: clients,
            tokens: ArcSwap::from_pointee(Tokens(tokens)),
            files,
            reload_interval,
        }
    }

    /// The names of all clients, for metric labels.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.all.iter().map(|c| c.name.as_str())
    }

    /// How many clients are configured (each [`Client::index`] is below it).
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// The client whose current token is `presented`. Every token is compared, in constant time,
    /// so the time taken says nothing about which token (or how much of one) matched.
    pub fn by_token(&self, presented: &str) -> Option<Arc<Client>> {
        let presented = TokenDigest::of(presented);
        let tokens = self.tokens.load();
        let mut found = 0u64;
        let mut any = subtle::Choice::from(0);
        for (index, digest) in &tokens.0 {
            let equal = presented.0.ct_eq(&digest.0);
            found.conditional_assign(&u64::try_from(*index).expect("an index fits in u64"), equal);
            any |= equal;
        }
        bool::from(any).then(|| {
            let index = usize::try_from(found).expect("an index fits in usize");
            Arc::clone(&self.all[index])
        })
    }

    /// The client a Unix socket peer with `uid` is, if any.
    pub fn by_uid(&self, uid: u32) -> Option<Arc<Client>> {
        self.all
            .iter()
            .find(|c| c.uids.contains(&uid))
            .map(Arc::clone)
    }

    /// Re-reads every token file; a changed token replaces the old one at once. A file that
    /// cannot be read or holds an invalid token leaves that client's current token in place.
    pub fn reload(&self) {
        if self.files.is_empty() {
            return;
        }
        let current = self.tokens.load();
        let mut next = current.0.clone();
        let mut changed = Vec::new();
        for (index, path) in &self.files {
            let name = &self.all[*index].name;
            match read_token_file(path) {
                Ok(token) => {
                    let digest = TokenDigest::of(token.expose_secret());
                    let slot = next
                        .iter_mut()
                        .find(|(i, _)| i == index)
                        .expect("a token file belongs to a client with a token");
                    if !bool::from(slot.1.0.ct_eq(&digest.0)) {
                        slot.1 = digest;
                        changed.push(name.as_str());
                    }
                }
                Err(why) => {
                    warn!(client = %name, error = %why, "token file unusable; keeping the current token");
                }
            }
        }
        if !changed.is_empty() {
            self.tokens.store(Arc::new(Tokens(next)));
            info!(clients = ?changed, "token changed; the previous token no longer opens anything");
        }
    }

    /// Re-reads the token files every reload interval, until the task is dropped.
    pub async fn run_reload(self: Arc<Self>) {
        if self.files.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(self.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let clients = Arc::clone(&self);
            // File reads block; keep them off the request-serving threads.
            let _ = tokio::task::spawn_blocking(move || clients.reload()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use crate::credentials::DbName;
    use secrecy::SecretString;

    fn client(name: &str, token: Option<TokenConfig>, uids: &[u32], scope: Scope) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            token,
            unix_uids: uids.to_vec(),
            scope,
        }
    }

    fn env_token(value: &str) -> TokenConfig {
        TokenConfig {
            source: TokenSource::Env("UNUSED".into()),
            value: SecretString::from(value),
        }
    }

    #[test]
    fn tokens_and_uids_identify_their_own_client_only() {
        let only_a = Scope::Only([DbName::parse("a").unwrap()].into());
        let clients = Clients::new(
            vec![
                client("one", Some(env_token("token-one-0123456789")), &[], only_a),
                client(
                    "two",
                    Some(env_token("token-two-0123456789")),
                    &[],
                    Scope::All,
                ),
                client("three", None, &[1001], Scope::All),
            ],
            Duration::from_secs(1),
        );
        assert_eq!(
            clients.by_token("token-one-0123456789").unwrap().name,
            "one"
        );
        assert_eq!(
            clients.by_token("token-two-0123456789").unwrap().name,
            "two"
        );
        assert!(clients.by_token("token-one-012345678").is_none());
        assert!(clients.by_token("").is_none());
        assert_eq!(clients.by_uid(1001).unwrap().name, "three");
        assert!(clients.by_uid(0).is_none());
        let one = clients.by_token("token-one-0123456789").unwrap();
        assert!(one.scope.allows("a") && !one.scope.allows("b"));
    }

    #[test]
    fn a_rewritten_token_file_replaces_the_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token-0123456789\n").unwrap();
        let clients = Clients::new(
            vec![client(
                "app",
                Some(TokenConfig {
                    source: TokenSource::File(path.clone()),
                    value: read_token_file(&path).unwrap(),
                }),
                &[],
                Scope::All,
            )],
            Duration::from_secs(1),
        );
        assert!(clients.by_token("first-token-0123456789").is_some());
        std::fs::write(&path, "second-token-0123456789").unwrap();
        clients.reload();
        assert!(clients.by_token("first-token-0123456789").is_none());
        assert!(clients.by_token("second-token-0123456789").is_some());
        std::fs::write(&path, "short").unwrap();
        clients.reload();
        assert!(
            clients.by_token("second-token-0123456789").is_some(),
            "an invalid file keeps the current token"
        );
    }

    #[test]
    fn debug_output_holds_no_token() {
        let clients = Clients::new(
            vec![client(
                "one",
                Some(env_token("token-one-0123456789")),
                &[],
                Scope::All,
            )],
            Duration::from_secs(1),
        );
        assert!(!format!("{clients:?}").contains("token-one"));
    }
}
