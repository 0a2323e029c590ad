//! Issue 14: tokens from an identity provider. Keys are generated in the test (RSA, P-256,
//! Ed25519), published by a small JWKS server on 127.0.0.1 that counts its requests, and
//! checked on `/ws` (4001 when refused) and `POST /publish` (401).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tidings_server::Config;
use tokio_tungstenite::tungstenite::Message;

/// A signing key with its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.into(),
            alg,
            encoding,
            jwk,
        }
    }

    fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    fn ec(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
        )
    }

    fn ed(kid: &str) -> Self {
        // PKCS#8 of an Ed25519 private key: a fixed prefix and the 32-byte seed (RFC 8410).
        let seed = rand::random::<[u8; 32]>();
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        // jsonwebtoken cannot derive an Ed25519 JWK: built by hand.
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&der),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid,
                        "x": base64url(public.as_bytes())}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A token for `sub` valid for an hour, with `extra` claims merged in.
    fn token(&self, sub: &str, extra: Value) -> String {
        self.sign(&claims(sub, extra))
    }
}

fn claims(sub: &str, extra: Value) -> Value {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"sub": sub, "exp": exp});
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    claims
}

/// A JWKS server on 127.0.0.1 whose key list the test changes, counting requests.
struct Idp {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: &[&Key]) -> Self {
        let list: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (l, h) = (list.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let keys = l.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            keys: list,
            hits,
        }
    }

    fn publish(&self, keys: &[&Key]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn accepted(server: &TestServer, token: &str) {
    let mut ws = connect(&server.ws_url(token)).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

async fn refused(server: &TestServer, token: &str, case: &str) {
    let mut ws = connect(&server.ws_url(token)).await;
    match next_frame(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001, "{case}"),
        other => panic!("{case}: expected close 4001, got {other:?}"),
    }
}

async fn publish_status(server: &TestServer, token: &str) -> u16 {
    reqwest::Client::new()
        .post(server.http_url("/publish"))
        .bearer_auth(token)
        .json(&event_json("list:1", "1"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_from_a_jwks_url() {
    let (rsa, ec, ed) = (Key::rsa("r1"), Key::ec("e1"), Key::ed("d1"));
    let idp = Idp::start(&[&rsa, &ec, &ed]).await;
    let server = start_server_with(Config::new(SECRET).with_jwks(&idp.url)).await;
    for key in [&rsa, &ec, &ed] {
        accepted(&server, &key.token("42", json!({}))).await;
        let publisher = key.token("backend", json!({"scope": "publish"}));
        assert_eq!(
            publish_status(&server, &publisher).await,
            202,
            "{:?}",
            key.alg
        );
        // Signed by another key under the same kid: refused.
        let impostor = match key.alg {
            Algorithm::RS256 => Key::rsa(&key.kid),
            Algorithm::ES256 => Key::ec(&key.kid),
            _ => Key::ed(&key.kid),
        };
        refused(&server, &impostor.token("42", json!({})), "impostor").await;
        let publisher = impostor.token("backend", json!({"scope": "publish"}));
        assert_eq!(publish_status(&server, &publisher).await, 401);
    }
    // HS256 with the secret still works next to the JWKS.
    accepted(&server, &mint_token("42")).await;
    // The keys were fetched once, at start.
    assert_eq!(idp.hits(), 1);
}

#[tokio::test]
async fn rotation_with_a_bounded_refetch() {
    let interval = Duration::from_secs(2);
    let (a, b) = (Key::ec("key-a"), Key::ed("key-b"));
    let idp = Idp::start(&[&a]).await;
    let server = start_server_with(
        Config::new(SECRET)
            .with_jwks(&idp.url)
            .with_jwks_refetch_interval(interval),
    )
    .await;
    accepted(&server, &a.token("42", json!({}))).await;
    assert_eq!(idp.hits(), 1);
    let loaded = tokio::time::Instant::now();

    // The provider publishes key-b. Within the refetch interval nothing is fetched: neither
    // for key-b nor for a flood of random kids.
    idp.publish(&[&a, &b]);
    refused(&server, &b.token("42", json!({})), "within the interval").await;
    for i in 0..20 {
        let stranger = Key::ed(&format!("random-{i}"));
        let token = stranger.token("42", json!({"scope": "publish"}));
        assert_eq!(publish_status(&server, &token).await, 401);
    }
    assert_eq!(idp.hits(), 1, "refetched within the interval");

    // After it, key-b is fetched and accepted without a restart.
    tokio::time::sleep_until(loaded + interval + Duration::from_millis(100)).await;
    accepted(&server, &b.token("42", json!({}))).await;
    assert_eq!(idp.hits(), 2);
    let refetched = tokio::time::Instant::now();

    // key-a is removed: still cached until the next refetch, then refused.
    idp.publish(&[&b]);
    accepted(&server, &a.token("42", json!({}))).await;
    tokio::time::sleep_until(refetched + interval + Duration::from_millis(100)).await;
    refused(
        &server,
        &Key::ec("unknown").token("42", json!({})),
        "unknown kid",
    )
    .await;
    assert_eq!(idp.hits(), 3);
    refused(&server, &a.token("42", json!({})), "removed key").await;
    accepted(&server, &b.token("42", json!({}))).await;
    assert_eq!(idp.hits(), 3);
}

#[tokio::test]
async fn alg_none_and_algorithm_confusion_are_refused() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let public = private.to_public_key();
    let rsa_key = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let der = private.to_pkcs1_der().unwrap();
        Key::new(
            "r1",
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    };
    let idp = Idp::start(&[&rsa_key]).await;
    // The public key in every form an attacker might use as an HMAC secret.
    let pkcs1_pem = public.to_pkcs1_pem(Default::default()).unwrap();
    let spki_pem = public.to_public_key_pem(Default::default()).unwrap();
    let pkcs1_der = public.to_pkcs1_der().unwrap().as_bytes().to_vec();
    let hs256_with = |secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("r1".into());
        jsonwebtoken::encode(
            &header,
            &claims("42", json!({"scope": "publish"})),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let none = {
        let header = base64url(br#"{"alg":"none","typ":"JWT","kid":"r1"}"#);
        let body = base64url(
            claims("42", json!({"scope": "publish"}))
                .to_string()
                .as_bytes(),
        );
        format!("{header}.{body}.")
    };
    // A JWKS-only server (no secret: HS256 refused outright) and one with a secret too.
    for config in [Config::new(""), Config::new(SECRET)] {
        let server = start_server_with(config.with_jwks(&idp.url)).await;
        accepted(&server, &rsa_key.token("42", json!({}))).await;
        let cases = [
            ("alg none", none.clone()),
            (
                "HS256 keyed with the PKCS#1 PEM",
                hs256_with(pkcs1_pem.as_bytes()),
            ),
            (
                "HS256 keyed with the SPKI PEM",
                hs256_with(spki_pem.as_bytes()),
            ),
            ("HS256 keyed with the DER", hs256_with(&pkcs1_der)),
        ];
        for (case, token) in cases {
            refused(&server, &token, case).await;
            assert_eq!(publish_status(&server, &token).await, 401, "{case}");
        }
    }
    // Without a secret nothing can be minted, and HS256 tokens signed with "" are refused.
    let server = start_server_with(Config::new("").with_jwks(&idp.url)).await;
    assert!(
        server
            .tidings
            .issue_token("42", Duration::from_secs(60), None)
            .is_err()
    );
    refused(
        &server,
        &sign(&claims("42", json!({})), Algorithm::HS256, ""),
        "empty secret",
    )
    .await;
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_set() {
    let key = Key::rsa("r1");
    let idp = Idp::start(&[&key]).await;
    let server = start_server_with(
        Config::new(SECRET)
            .with_jwks(&idp.url)
            .with_audience("tidings")
            .with_issuer("https://idp.test/"),
    )
    .await;
    let good = json!({"aud": "tidings", "iss": "https://idp.test/", "scope": "publish"});
    accepted(&server, &key.token("42", good.clone())).await;
    assert_eq!(
        publish_status(&server, &key.token("42", good.clone())).await,
        202
    );
    // A list of audiences that contains ours is fine.
    let listed = json!({"aud": ["other", "tidings"], "iss": "https://idp.test/"});
    accepted(&server, &key.token("42", listed)).await;
    let hs = |extra: Value| sign(&claims("42", extra), Algorithm::HS256, SECRET);
    accepted(&server, &hs(good.clone())).await;
    let bad = [
        (
            "wrong aud",
            json!({"aud": "other", "iss": "https://idp.test/", "scope": "publish"}),
        ),
        (
            "wrong iss",
            json!({"aud": "tidings", "iss": "https://evil.test/", "scope": "publish"}),
        ),
        (
            "no aud",
            json!({"iss": "https://idp.test/", "scope": "publish"}),
        ),
        ("no iss", json!({"aud": "tidings", "scope": "publish"})),
    ];
    for (case, extra) in bad {
        for token in [key.token("42", extra.clone()), hs(extra.clone())] {
            refused(&server, &token, case).await;
            assert_eq!(publish_status(&server, &token).await, 401, "{case}");
        }
    }
}

#[tokio::test]
async fn the_binary_reads_a_jwks_file_without_a_secret() {
    use tokio::io::AsyncBufReadExt;
    let key = Key::ed("file-key");
    let dir = std::env::temp_dir().join(format!("tidings-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_remove("JWT_SECRET")
        .env_remove("JWT_SECRET_FILE")
        .env("BIND", "127.0.0.1:0")
        .env("JWT_JWKS", &path)
        .env("JWT_AUDIENCE", "tidings")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("tidings listening on http://").unwrap();
    let url = |token: &str| format!("ws://{addr}/ws?token={token}");
    let mut ws = connect(&url(&key.token("42", json!({"aud": "tidings"})))).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    for token in [key.token("42", json!({"aud": "other"})), mint_token("42")] {
        let mut ws = connect(&url(&token)).await;
        match next_frame(&mut ws).await {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
            other => panic!("expected close 4001, got {other:?}"),
        }
    }
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn in_band_refresh_with_provider_tokens() {
    let (a, b) = (Key::ec("a"), Key::ed("b"));
    let idp = Idp::start(&[&a]).await;
    let server = start_server_with(
        Config::new(SECRET)
            .with_jwks(&idp.url)
            .with_jwks_refetch_interval(Duration::ZERO),
    )
    .await;
    let mut ws = connect(&server.ws_url(&a.token("42", json!({})))).await;
    let refresh = |token: String| json!({"action": "refresh", "token": token}).to_string();
    roundtrip(
        &mut ws,
        &refresh(a.token("42", json!({}))),
        r#"{"action":"refreshed"}"#,
    )
    .await;
    // A refresh naming a kid the cache does not hold does not wait for the provider: the
    // connection closes 4001, and the refetch it started lets the reconnect through.
    idp.publish(&[&a, &b]);
    send(&mut ws, &refresh(b.token("42", json!({})))).await;
    match next_frame(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected close 4001, got {other:?}"),
    }
    assert!(eventually(|| async { idp.hits() >= 2 }).await);
    accepted(&server, &b.token("42", json!({}))).await;
}

#[tokio::test]
async fn the_binary_refuses_an_unusable_jwks_file() {
    let dir = std::env::temp_dir().join(format!("tidings-jwks-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let symmetric_only = dir.join("oct.json");
    std::fs::write(
        &symmetric_only,
        r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    let missing = dir.join("missing.json");
    for (path, expected) in [
        (&symmetric_only, "holds no usable key"),
        (&missing, "cannot read"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .env_remove("JWT_SECRET")
            .env_remove("JWT_SECRET_FILE")
            .env("BIND", "127.0.0.1:0")
            .env("JWT_JWKS", path)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
