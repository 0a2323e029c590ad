//! The `Origin` allow-list of `/ws`: refused with 403 before the upgrade when configured,
//! everything accepted by default.

use crate::common::*;
use tidings_server::Config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn connect_from(
    server: &TestServer,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = server
        .ws_url(&mint_token("42"))
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).expect("header"));
    }
    tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_disallowed_origin_gets_403_before_the_upgrade() {
    let config = Config::new(SECRET).with_allowed_origins(["https://app.example.com"]);
    let server = start_server_with(config).await;
    match connect_from(&server, Some("https://evil.example.com")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(other) => panic!("expected HTTP 403, got {other}"),
        Ok(_) => panic!("a disallowed origin was upgraded"),
    }
    let mut ws = connect_from(&server, Some("https://APP.example.com/"))
        .await
        .expect("an allowed origin connects");
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // A client without Origin (not a browser) still connects with its token.
    let mut ws = connect_from(&server, None)
        .await
        .expect("no origin connects");
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn without_an_allow_list_every_origin_is_accepted() {
    let server = start_server().await;
    let mut ws = connect_from(&server, Some("https://anywhere.example"))
        .await
        .expect("connects");
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}
