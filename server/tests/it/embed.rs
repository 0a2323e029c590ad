//! The library embedded in an app: the app merges `tidings.router()` with its own routes and
//! publishes from its own handler through `Hub::publish`, with the hub in its state.

use crate::common::*;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use tidings_server::{Config, Tidings};

/// An app handler that changes "an item" and tells the subscribers of its list.
async fn add_item(State(tidings): State<Tidings>, Path(list): Path<u32>) -> String {
    let delivered = tidings.hub().publish(event(&format!("list:{list}"), "77"));
    delivered.to_string()
}

#[tokio::test]
async fn an_embedding_app_publishes_from_its_own_handler() {
    let tidings = Tidings::new(Config::new(SECRET));
    let app = Router::new()
        .route("/lists/{list}/items", post(add_item))
        .with_state(tidings.clone())
        .merge(tidings.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tidings_server::serve(
        listener,
        app,
        tidings.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut ws = connect(&format!("ws://{addr}/ws?token={}", mint_token("42"))).await;
    subscribe(&mut ws, "list:5").await;
    let delivered = reqwest::Client::new()
        .post(format!("http://{addr}/lists/5/items"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(delivered, "1");
    assert_eq!(recv_text(&mut ws).await, event_text("list:5", "77"));

    stop.send(()).unwrap();
    assert_eq!(recv_close(&mut ws).await.0, 1012);
    drop(ws);
    tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
}
