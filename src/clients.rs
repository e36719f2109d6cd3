//! The callers of the credentials API: who presents which token (or connects with which Unix
//! uid) and which databases each may read. Tokens are kept only as SHA-256 digests, compared in
//! constant time, and token files are re-read so that a rotated token takes effect.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tracing::{error, info, warn};

use crate::config::{ClientConfig, Scope, SecretPatterns, TokenSource, read_token_file};
use crate::metrics::Metrics;

/// A recognised caller.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    pub scope: Scope,
    /// The secrets it may read through the AWS agent's API.
    pub aws_agent_secrets: SecretPatterns,
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
            aws_agent_secrets: SecretPatterns::default(),
            index: 0,
            uids: Vec::new(),
        })
    }
}

/// A token as its digest, so the broker holds no usable copy of it. Held as four words, so
/// that a constant-time comparison takes four steps rather than 32 (it runs for every client on
/// every request).
#[derive(Clone, Copy)]
struct TokenDigest([u64; 4]);

impl TokenDigest {
    fn of(token: &str) -> Self {
        Self::from_bytes(Sha256::digest(token.as_bytes()).into())
    }

    fn from_bytes(digest: [u8; 32]) -> Self {
        let mut words = [0; 4];
        for (word, bytes) in words.iter_mut().zip(digest.chunks_exact(8)) {
            *word = u64::from_ne_bytes(bytes.try_into().expect("8 bytes"));
        }
        Self(words)
    }
}

/// The current token of each client that has one, by client index.
struct Tokens(Vec<(usize, TokenDigest)>);

/// The pairs of client indexes (lower first) whose tokens are the same.
fn duplicate_pairs(tokens: &[(usize, TokenDigest)]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, (a, first)) in tokens.iter().enumerate() {
        for (b, second) in &tokens[i + 1..] {
            if bool::from(first.0.ct_eq(&second.0)) {
                pairs.push(((*a).min(*b), (*a).max(*b)));
            }
        }
    }
    pairs
}

/// What the last reloads found wrong, so that each problem is logged once.
#[derive(Debug, Default)]
struct Problems {
    /// Clients whose token file is unusable, with why.
    unusable: BTreeMap<usize, String>,
    /// Pairs of clients whose token files hold the same token.
    conflicts: BTreeSet<(usize, usize)>,
}

/// Every configured client, with tokens that can be replaced while the broker runs.
pub struct Clients {
    all: Vec<Arc<Client>>,
    tokens: ArcSwap<Tokens>,
    /// Token files to re-read, by client index.
    files: Vec<(usize, PathBuf)>,
    reload_interval: Duration,
    problems: Mutex<Problems>,
    /// `credential_broker_token_reload_failures_total{client,reason}`.
    failures: IntCounterVec,
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
    pub fn new(configs: Vec<ClientConfig>, reload_interval: Duration, metrics: &Metrics) -> Self {
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
                aws_agent_secrets: config.aws_agent_secrets,
                index,
                uids: config.unix_uids,
            }));
        }
        Self {
            all: clients,
            tokens: ArcSwap::from_pointee(Tokens(tokens)),
            files,
            reload_interval,
            problems: Mutex::default(),
            failures: metrics.token_reload_failures.clone(),
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
    pub fn by_token(&self, presented: &str) -> Option<&Arc<Client>> {
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
            &self.all[index]
        })
    }

    /// The client a Unix socket peer with `uid` is, if any.
    pub fn by_uid(&self, uid: u32) -> Option<&Arc<Client>> {
        self.all.iter().find(|c| c.uids.contains(&uid))
    }

    /// Re-reads every token file; a changed token replaces the old one at once. A file that
    /// cannot be read or holds an invalid token leaves that client's current token in place
    /// (logged once per problem). A token that would open two clients is refused: both keep
    /// their previous tokens, an error names both clients, and so it stays until the files
    /// differ. Every refusal is counted.
    pub fn reload(&self) {
        if self.files.is_empty() {
            return;
        }
        let current = self.tokens.load();
        let mut next = current.0.clone();
        let mut problems = self
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (index, path) in &self.files {
            let name = &self.all[*index].name;
            match read_token_file(path) {
                Ok(token) => {
                    let digest = TokenDigest::of(token.expose_secret());
                    let slot = next
                        .iter_mut()
                        .find(|(i, _)| i == index)
                        .expect("a token file belongs to a client with a token");
                    slot.1 = digest;
                    if problems.unusable.remove(index).is_some() {
                        info!(client = %name, "token file usable again");
                    }
                }
                Err(why) => {
                    self.failures.with_label_values(&[name, "unusable"]).inc();
                    if problems.unusable.get(index) != Some(&why) {
                        warn!(client = %name, error = %why, "token file unusable; keeping the current token");
                        problems.unusable.insert(*index, why);
                    }
                }
            }
        }
        // Until no token opens two clients: the clients involved keep their current tokens
        // (which never do, so this ends).
        let mut conflicts = BTreeSet::new();
        loop {
            let pairs = duplicate_pairs(&next);
            if pairs.is_empty() {
                break;
            }
            for (a, b) in pairs {
                for index in [a, b] {
                    let slot = next.iter_mut().find(|(i, _)| *i == index).expect("a slot");
                    slot.1 = current
                        .0
                        .iter()
                        .find(|(i, _)| *i == index)
                        .expect("a slot")
                        .1;
                }
                conflicts.insert((a, b));
            }
        }
        for &(a, b) in &conflicts {
            let (first, second) = (&self.all[a].name, &self.all[b].name);
            for name in [first, second] {
                self.failures.with_label_values(&[name, "duplicate"]).inc();
            }
            if !problems.conflicts.contains(&(a, b)) {
                error!(client = %first, other_client = %second, "two clients' token files hold the same token; both keep their previous tokens until the files differ");
            }
        }
        for &(a, b) in problems.conflicts.difference(&conflicts) {
            info!(client = %self.all[a].name, other_client = %self.all[b].name, "the two clients' tokens differ again");
        }
        problems.conflicts = conflicts;
        let changed: Vec<&str> = next
            .iter()
            .zip(&current.0)
            .filter(|((_, new), (_, old))| !bool::from(new.0.ct_eq(&old.0)))
            .map(|((index, _), _)| self.all[*index].name.as_str())
            .collect();
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

    #[test]
    fn digests_are_equal_only_when_every_bit_is() {
        let digest: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7).unwrap());
        let same = TokenDigest::from_bytes(digest);
        assert!(bool::from(TokenDigest::from_bytes(digest).0.ct_eq(&same.0)));
        for byte in 0..32 {
            for bit in 0..8 {
                let mut other = digest;
                other[byte] ^= 1 << bit;
                let other = TokenDigest::from_bytes(other);
                assert!(!bool::from(other.0.ct_eq(&same.0)), "byte {byte} bit {bit}");
            }
        }
    }

    fn client(name: &str, token: Option<TokenConfig>, uids: &[u32], scope: Scope) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            token,
            unix_uids: uids.to_vec(),
            scope,
            aws_agent_secrets: SecretPatterns::default(),
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
            &Metrics::new(),
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
            &Metrics::new(),
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
            &Metrics::new(),
        );
        assert!(!format!("{clients:?}").contains("token-one"));
    }
}
