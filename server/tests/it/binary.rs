//! The `tidings` binary: refuses to start without JWT_SECRET, mints tokens, prints its
//! listening line, serves, never logs a token, and closes clients with 1012 on SIGTERM.

use std::process::Stdio;

use crate::common::*;
use tidings_server::{Config, Tidings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

fn tidings() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("JWT_SECRET")
        .env_remove("BIND")
        .env_remove("RUST_LOG")
        .env_remove("ALLOWED_ORIGINS")
        .env_remove("MAX_CONNECTIONS")
        .env_remove("MAX_CONNECTIONS_PER_USER")
        .env_remove("JWT_SECRET_FILE")
        .env_remove("ALLOW_WEAK_SECRET")
        .env_remove("METRICS_BIND")
        .env_remove("METRICS_TOKEN")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("no output line in time")
        .unwrap()
        .expect("stdout closed")
}

/// Reads the listening line and returns the address.
async fn listening(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    let line = next_line(lines).await;
    line.strip_prefix("tidings listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}

async fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn refuses_to_start_without_jwt_secret() {
    for args in [&[][..], &["token", "--sub", "1"][..]] {
        let out = tidings().args(args).output().await.unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("JWT_SECRET is required"), "{stderr}");
    }
    let out = tidings().env("JWT_SECRET", "").output().await.unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn token_subcommand_prints_a_verifiable_jwt() {
    let out = tidings()
        .env("JWT_SECRET", SECRET)
        .args(["token", "--sub", "42", "--scope", "publish", "--ttl", "60"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = Tidings::new(Config::new(SECRET))
        .verify_token(token.trim())
        .unwrap();
    assert_eq!(claims.sub, "42");
    assert!(claims.has_scope("publish"));
}

#[tokio::test]
async fn serves_publishes_and_closes_with_1012_on_sigterm() {
    let mut child = tidings()
        .env("JWT_SECRET", SECRET)
        .env("BIND", "127.0.0.1:0")
        .args(["--log-level", "trace"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = listening(&mut lines).await;

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let token = mint_token("42");
    let mut ws = connect(&format!("ws://{addr}/ws?token={token}")).await;
    subscribe(&mut ws, "list:1").await;
    let publish_token = mint_publish_token();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/publish"))
        .bearer_auth(&publish_token)
        .body(event_text("list:1", "9"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), r#"{"delivered":1}"#);
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "9"));
    // A refresh frame carries a token in the message itself: tungstenite's trace lines
    // ("Received message …", frames as hex) would print it.
    let refresh_token = mint_claims(serde_json::json!({
        "sub": "42",
        "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 7200,
    }));
    roundtrip(
        &mut ws,
        &format!(r#"{{"action":"refresh","token":"{refresh_token}"}}"#),
        r#"{"action":"refreshed"}"#,
    )
    .await;

    // The token in the subprotocol (the browser client's default), accepted and refused: the
    // request logs at trace level, the 4001 close reason and /metrics never carry it.
    let protocol_token = mint_token("43");
    let (mut carried, chosen) = connect_with_protocols(
        &format!("ws://{addr}/ws"),
        &["tidings", &format!("tidings.token.{protocol_token}")],
    )
    .await;
    assert_eq!(chosen.as_deref(), Some("tidings"));
    subscribe(&mut carried, "list:2").await;
    let refused_token = mint_claims(serde_json::json!({"sub": "44", "exp": 1}));
    let (mut refused, _) = connect_with_protocols(
        &format!("ws://{addr}/ws"),
        &["tidings", &format!("tidings.token.{refused_token}")],
    )
    .await;
    let (code, reason) = recv_close(&mut refused).await;
    assert_eq!(code, 4001);
    assert!(!reason.contains(refused_token.rsplit('.').next().unwrap()));
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tidings_"), "{metrics}");
    for secret in [&token, &protocol_token, &refused_token] {
        assert!(!metrics.contains(secret.rsplit('.').next().unwrap()));
    }

    sigterm(&child).await;
    assert_eq!(recv_close(&mut ws).await.0, 1012);
    drop(ws);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("tidings did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("/ws"),
        "request logging is on at trace level: {logs}"
    );
    for secret in [
        &token,
        &publish_token,
        &refresh_token,
        &protocol_token,
        &refused_token,
        &SECRET.to_owned(),
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
    }
    // The signature part alone must not appear either, nor the refresh token as hex.
    for t in [&token, &protocol_token, &refused_token] {
        assert!(!logs.contains(t.rsplit('.').next().unwrap()));
    }
    let signature = refresh_token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature));
    let hex: String = signature
        .bytes()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!logs.contains(&hex), "the refresh token leaked as hex");
}

/// Spawns the binary with `args` and `JWT_SECRET=SECRET`; returns it and its address.
async fn spawn_serving(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut cmd = tidings();
    cmd.env("JWT_SECRET", SECRET).env("BIND", "127.0.0.1:0");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.args(args).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = listening(&mut lines).await;
    (child, lines, addr)
}

/// Stops the binary with SIGTERM and returns its stderr.
async fn stop_and_read_logs(mut child: Child) -> String {
    sigterm(&child).await;
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("tidings did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    logs
}

/// Issue 10 item 8b: a `sub` with a newline and ANSI escape codes cannot forge a log line or
/// reach the terminal: it is logged escaped.
#[tokio::test]
async fn a_hostile_sub_is_logged_escaped() {
    let (child, _lines, addr) = spawn_serving(&["--log-level", "debug"], &[]).await;
    let sub = "mallory\n2026-01-01T00:00:00.000000Z  INFO FORGED: admin logged in\x1b[2J";
    let token = mint_claims(serde_json::json!({
        "sub": sub,
        "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600,
    }));
    let mut ws = connect(&format!("ws://{addr}/ws?token={token}")).await;
    subscribe(&mut ws, "list:1").await;
    // A forged-looking alg in a token's header ends up in the refusal reason.
    let header = base64url(br#"{"alg":"HS256\n FORGED-ALG\u001b[31m"}"#);
    let mut refused = connect(&format!("ws://{addr}/ws?token={header}.e30.c2ln")).await;
    assert_eq!(recv_close(&mut refused).await.0, 4001);
    drop(ws);
    let logs = stop_and_read_logs(child).await;
    assert!(
        logs.contains(r"mallory\n2026"),
        "the sub is logged, escaped: {logs}"
    );
    assert!(!logs.contains('\x1b'), "an escape code reached the logs");
    for line in logs.lines() {
        assert!(
            !line.contains("FORGED") || line.contains(r"\n"),
            "forged line: {line}"
        );
    }
}

/// Issue 10 item 8d: a secret under 32 bytes is refused (serve and token), unless
/// `--allow-weak-secret`; `--jwt-secret-file` reads the secret from a file.
#[tokio::test]
async fn a_weak_secret_is_refused_unless_allowed() {
    for args in [&[][..], &["token", "--sub", "1"][..]] {
        let out = tidings()
            .env("JWT_SECRET", "short")
            .env("BIND", "127.0.0.1:0")
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("at least 32 are required"), "{stderr}");
    }
    let out = tidings()
        .env("JWT_SECRET", "short")
        .args(["--allow-weak-secret", "token", "--sub", "1"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());

    let dir = std::env::temp_dir().join(format!("tidings-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwt-secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = tidings()
        .arg("--jwt-secret-file")
        .arg(&file)
        .args(["token", "--sub", "42"])
        .output()
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = Tidings::new(Config::new(SECRET))
        .verify_token(token.trim())
        .unwrap();
    assert_eq!(claims.sub, "42");
}

/// Issue 10 item 6: `METRICS_BIND` moves `/metrics` to its own listener (gone from the public
/// one), and `METRICS_TOKEN` protects it.
#[tokio::test]
async fn metrics_on_their_own_listener_with_a_token() {
    let (child, mut lines, addr) = spawn_serving(
        &[],
        &[
            ("METRICS_BIND", "127.0.0.1:0"),
            ("METRICS_TOKEN", "m3trics"),
        ],
    )
    .await;
    let line = next_line(&mut lines).await;
    let metrics_url = line
        .strip_prefix("tidings metrics on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned();
    let public = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let client = reqwest::Client::new();
    let anonymous = client.get(&metrics_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let scraped = client
        .get(&metrics_url)
        .bearer_auth("m3trics")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("tidings_connections")
    );
    let logs = stop_and_read_logs(child).await;
    assert!(!logs.contains("m3trics"));
}

#[tokio::test]
async fn dev_mode_prints_working_tokens_and_a_curl_line() {
    let mut child = tidings()
        .args(["dev", "--bind", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = listening(&mut lines).await;
    let mut subscriber = None;
    let mut publisher = None;
    let mut curl = None;
    while curl.is_none() {
        let line = next_line(&mut lines).await;
        if let Some(t) = line.strip_prefix("subscriber token: ") {
            subscriber = Some(t.to_owned());
        } else if let Some(t) = line.strip_prefix("publisher token: ") {
            publisher = Some(t.to_owned());
        } else if line.starts_with("publish: curl ") {
            curl = Some(line);
        }
    }
    let (subscriber, publisher) = (subscriber.unwrap(), publisher.unwrap());
    assert!(curl.unwrap().contains(&format!("http://{addr}/publish")));

    let mut ws = connect(&format!("ws://{addr}/ws?token={subscriber}")).await;
    subscribe(&mut ws, "list:123").await;
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/publish"))
        .bearer_auth(&publisher)
        .body(event_text("list:123", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(recv_text(&mut ws).await, event_text("list:123", "1"));
    // The subscriber token cannot publish.
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/publish"))
        .bearer_auth(&subscriber)
        .body(event_text("list:123", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    sigterm(&child).await;
    tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("tidings dev did not exit")
        .unwrap();
}

#[tokio::test]
async fn allowed_origins_and_connection_limits_from_the_environment() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut child = tidings()
        .env("JWT_SECRET", SECRET)
        .env("BIND", "127.0.0.1:0")
        .env(
            "ALLOWED_ORIGINS",
            "https://app.example.com,https://admin.example.com",
        )
        .env("MAX_CONNECTIONS_PER_USER", "1")
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = listening(&mut lines).await;
    let url = format!("ws://{addr}/ws?token={}", mint_token("42"));
    let with_origin = |origin: &'static str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example.com")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin("https://admin.example.com"))
        .await
        .expect("an allowed origin connects");
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // The same user again: over the per-user limit of 1.
    let mut second = connect(&url).await;
    assert_eq!(recv_close(&mut second).await.0, 4005);
    sigterm(&child).await;
    let _ = tokio::time::timeout(TIMEOUT, child.wait()).await;
}
