//! Verification keys from an identity provider: a JWKS (JSON Web Key Set) read from a file or
//! fetched over HTTP(S), cached, and refetched when a token names a key id (`kid`) the cache
//! does not hold (the provider rotated its keys).
//!
//! Refetches are bounded: at most one per [`Config::with_jwks_refetch_interval`] (default
//! 30 s), whatever the tokens say, so a client sending tokens with random `kid`s cannot make
//! the server hammer the provider; a failed fetch counts too. A refetch replaces the whole
//! cache, so a key the provider removed is refused from then on. A cache older than
//! [`JWKS_MAX_AGE`] is refetched in the background on the next token (same bound). One fetch
//! runs at a time, is bounded by [`JWKS_FETCH_TIMEOUT`] and reads at most
//! [`MAX_JWKS_BYTES`]; at most [`MAX_JWKS_KEYS`] keys are kept.
//!
//! Only asymmetric keys are taken from a JWKS (RSA: RS256/384/512 and PS256/384/512; EC
//! P-256/P-384: ES256/ES384; OKP Ed25519: EdDSA). A key's algorithm is its `alg` member, or
//! derived from its type; a token is checked only with the algorithm of the key its `kid`
//! names, so an HS256 token "signed" with a public key (algorithm confusion) is never
//! checked with that key.
//!
//! [`Config::with_jwks_refetch_interval`]: crate::Config::with_jwks_refetch_interval

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

/// How long one JWKS fetch (connect, request and body) may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read, in bytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The most keys kept from one JWKS (the rest are ignored).
pub const MAX_JWKS_KEYS: usize = 64;
/// A cache older than this is refetched (in the background, within the refetch bound).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// One usable key: the key and the only algorithm it verifies.
pub(crate) struct KeyEntry {
    pub(crate) key: DecodingKey,
    pub(crate) alg: Algorithm,
}

/// Where the key set comes from.
#[derive(Debug, Clone)]
enum Source {
    File(std::path::PathBuf),
    Url(String),
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<KeyEntry>>,
    /// Keys published without a `kid` (tried for a token without one).
    anonymous: Vec<Arc<KeyEntry>>,
    /// When the last fetch started (successful or not).
    last_attempt: Option<Instant>,
    /// When the keys were last replaced.
    loaded: Option<Instant>,
}

/// The cached key set of one [`Tidings`](crate::Tidings).
pub(crate) struct Jwks {
    source: Source,
    refetch_interval: Duration,
    cache: RwLock<Cache>,
    /// Held for the duration of a fetch: one at a time.
    fetching: tokio::sync::Mutex<()>,
    client: reqwest::Client,
}

/// The result of a cache lookup.
pub(crate) enum Lookup {
    /// The key (by `kid`), or the candidates for a token without a `kid`.
    Found(Vec<Arc<KeyEntry>>),
    /// No such key in the cache.
    Unknown,
}

impl Jwks {
    /// A key set read from `source`: an `https://` or `http://` URL, or a file path.
    pub(crate) fn new(source: &str, refetch_interval: Duration) -> Self {
        let source = if is_url(source) {
            Source::Url(source.to_owned())
        } else {
            Source::File(source.into())
        };
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            source,
            refetch_interval,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
            client,
        }
    }

    /// The cached key for `kid` (or every key without a kid, for `None`).
    pub(crate) fn lookup(&self, kid: Option<&str>) -> Lookup {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        match kid {
            Some(kid) => match cache.keys.get(kid) {
                Some(entry) => Lookup::Found(vec![entry.clone()]),
                None => Lookup::Unknown,
            },
            None if cache.anonymous.is_empty() => Lookup::Unknown,
            None => Lookup::Found(cache.anonymous.clone()),
        }
    }

    /// Whether the refetch bound allows a fetch now.
    fn may_fetch(&self) -> bool {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        cache
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.refetch_interval)
    }

    /// Whether the cache is older than [`JWKS_MAX_AGE`] (or was never loaded).
    fn stale(&self) -> bool {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        cache.loaded.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE)
    }

    /// Refetches the key set if the bound allows it (waiting for a fetch already running
    /// instead of starting another). Returns whether the cache may have changed.
    pub(crate) async fn refetch(&self) -> bool {
        let started = Instant::now();
        let _guard = self.fetching.lock().await;
        {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            // Another task fetched while this one waited: use its result.
            if cache.last_attempt.is_some_and(|t| t >= started) {
                return true;
            }
        }
        if !self.may_fetch() {
            return false;
        }
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok((keys, anonymous)) => {
                tracing::info!(keys = keys.len() + anonymous.len(), "JWKS loaded");
                let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                cache.keys = keys;
                cache.anonymous = anonymous;
                cache.loaded = Some(Instant::now());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the JWKS; keeping the cached keys");
                false
            }
        }
    }

    /// Starts a background refetch when the cache is stale and the bound allows it (needs a
    /// tokio runtime; without one nothing happens).
    pub(crate) fn refresh_in_background_if_stale(self: &Arc<Self>) {
        if self.stale() && self.may_fetch() {
            self.refresh_in_background();
        }
    }

    /// Starts a background refetch (within the bound).
    pub(crate) fn refresh_in_background(self: &Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let jwks = self.clone();
            rt.spawn(async move {
                jwks.refetch().await;
            });
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<KeyEntry>>, Vec<Arc<KeyEntry>>), String> {
        let body = match &self.source {
            Source::File(path) => {
                let owned = path.clone();
                let read = tokio::task::spawn_blocking(move || std::fs::read(owned));
                match tokio::time::timeout(JWKS_FETCH_TIMEOUT, read).await {
                    Ok(Ok(Ok(bytes))) if bytes.len() <= MAX_JWKS_BYTES => bytes,
                    Ok(Ok(Ok(_))) => return Err(format!("larger than {MAX_JWKS_BYTES} bytes")),
                    Ok(Ok(Err(e))) => return Err(format!("cannot read {}: {e}", path.display())),
                    Ok(Err(_)) => return Err("the reading task failed".into()),
                    Err(_) => return Err("reading timed out".into()),
                }
            }
            Source::Url(url) => self.download(url).await?,
        };
        parse(&body)
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, String> {
        // reqwest's errors may quote the URL; a JWKS URL is public, not a secret.
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Reads and parses a JWKS file now and returns how many usable keys it holds, so that the
/// `tidings` binary refuses to start on a missing, malformed or empty file (a URL is fetched
/// in the background instead: the provider may be briefly unreachable).
///
/// # Errors
/// Why the file cannot be used, as text.
pub fn check_file(path: &std::path::Path) -> Result<usize, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "{} is larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    let (keys, anonymous) = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    match keys.len() + anonymous.len() {
        0 => Err(format!(
            "{} holds no usable key (RSA, P-256/P-384 or Ed25519)",
            path.display()
        )),
        n => Ok(n),
    }
}

/// Whether a JWKS source is fetched over HTTP rather than read from a file.
pub fn is_url(source: &str) -> bool {
    source.starts_with("https://") || source.starts_with("http://")
}

type Parsed = (HashMap<String, Arc<KeyEntry>>, Vec<Arc<KeyEntry>>);

/// Reads a JWKS document; keys that cannot be used (symmetric, unknown type or curve,
/// malformed) are skipped, so one odd key does not hide the others.
fn parse(body: &[u8]) -> Result<Parsed, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    let mut anonymous = Vec::new();
    for value in set.keys {
        if keys.len() + anonymous.len() >= MAX_JWKS_KEYS {
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(alg) = algorithm(&jwk) else { continue };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let entry = Arc::new(KeyEntry { key, alg });
        match jwk.common.key_id {
            Some(kid) => {
                keys.insert(kid, entry);
            }
            None => anonymous.push(entry),
        }
    }
    Ok((keys, anonymous))
}

/// The one algorithm a JWK verifies: its `alg` when it fits the key type, else the type's
/// usual one. Symmetric keys (`oct`) and HMAC algorithms are never taken from a JWKS.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let declared = jwk
        .common
        .key_algorithm
        .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
    let fits = |alg: Algorithm, allowed: &[Algorithm]| allowed.contains(&alg).then_some(alg);
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            use Algorithm::{PS256, PS384, PS512, RS256, RS384, RS512};
            match declared {
                Some(a) => fits(a, &[RS256, RS384, RS512, PS256, PS384, PS512]),
                None => Some(RS256),
            }
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let usual = match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            };
            match declared {
                Some(a) => fits(a, &[usual]),
                None => Some(usual),
            }
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => match declared
        {
            Some(a) => fits(a, &[Algorithm::EdDSA]),
            None => Some(Algorithm::EdDSA),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_odd_keys_are_skipped() {
        let body = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"r","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB","alg":"HS256"},
            {"kty":"RSA","kid":"ok","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"weird"}
        ]}"#;
        let (keys, anonymous) = parse(body).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(anonymous.is_empty());
        assert_eq!(keys["ok"].alg, Algorithm::RS256);
        assert!(parse(b"[]").is_err());
    }
}
