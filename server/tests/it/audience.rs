//! The audience of an event (issue 12), in-memory broker, over real sockets: a publish that
//! excludes a connection (by the `cid` its client sent at the handshake), is limited to some
//! users or excludes some, in process (`Tidings::publish_to`) and over `POST /publish`. A
//! subscriber left out never receives the payload, live or replayed; one that tracks positions
//! gets a `skipped` frame so its `seq`s stay continuous; a seed client gets nothing and its
//! bytes are unchanged for events without audience. The same across two Redis nodes is in
//! `redis::audience_*`.

use serde_json::{Value, json};
use tidings_server::protocol::CONNECTION_ID_PARAM;
use tidings_server::{Audience, BrokerError, Config};

use crate::common::*;

/// A client of user `sub` that names itself `cid`.
async fn client(server: &TestServer, sub: &str, cid: Option<&str>) -> Ws {
    let mut url = server.ws_url(&mint_token(sub));
    if let Some(cid) = cid {
        url = format!("{url}&{CONNECTION_ID_PARAM}={cid}");
    }
    connect(&url).await
}

/// Subscribes asking for positions (as the wasm client does) and returns the ack's `seq`.
async fn subscribe_tracking(ws: &mut Ws, topic: &str) -> u64 {
    send(
        ws,
        &json!({"action": "subscribe", "topic": topic, "position": true}).to_string(),
    )
    .await;
    let ack: Value = serde_json::from_str(&recv_raw(ws).await).unwrap();
    assert_eq!(ack["action"], "subscribed");
    ack["seq"].as_u64().unwrap()
}

/// The next frame as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&recv_raw(ws).await).unwrap()
}

/// Asserts that the next frame is the `skipped` frame of `seq` on `topic`, exactly (nothing
/// of the event in it), and returns its epoch.
async fn expect_skipped(ws: &mut Ws, topic: &str, seq: u64) -> String {
    let text = recv_raw(ws).await;
    let frame: Value = serde_json::from_str(&text).unwrap();
    let epoch = frame["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        text,
        format!(r#"{{"action":"skipped","topic":"{topic}","seq":{seq},"epoch":"{epoch}"}}"#)
    );
    epoch
}

/// Asserts that the next frame is the event `entity_id` with `seq`.
async fn expect_event(ws: &mut Ws, entity_id: &str, seq: u64) {
    let frame = next_json(ws).await;
    assert_eq!(frame["data"]["entity_id"], entity_id, "{frame}");
    assert_eq!(frame["seq"], seq, "{frame}");
}

#[tokio::test]
async fn the_excluded_connection_gets_skipped_the_others_the_event() {
    let server = start_server().await;
    // Two tabs of one user, and a seed client that sent a connection id too.
    let mut tab_a = client(&server, "42", Some("tab-a")).await;
    let mut tab_b = client(&server, "42", Some("tab-b")).await;
    let mut seed_excluded = client(&server, "43", Some("seed-x")).await;
    let mut seed = client(&server, "44", None).await;
    assert_eq!(subscribe_tracking(&mut tab_a, "list:1").await, 0);
    assert_eq!(subscribe_tracking(&mut tab_b, "list:1").await, 0);
    subscribe(&mut seed_excluded, "list:1").await;
    subscribe(&mut seed, "list:1").await;

    let delivered = server
        .tidings
        .publish_to(
            event("list:1", "1"),
            Audience::everyone().exclude_connection("tab-a"),
        )
        .await
        .unwrap();
    assert_eq!(
        delivered.delivered, 3,
        "the excluded connection is not counted"
    );
    let to_seed_excluded = server
        .tidings
        .publish_to(
            event("list:1", "2"),
            Audience::everyone().exclude_connection("seed-x"),
        )
        .await
        .unwrap();
    assert_eq!(to_seed_excluded.delivered, 3);
    server.tidings.publish(event("list:1", "3")).await.unwrap();

    // The initiating tab: skipped, then the next events, seq continuous.
    expect_skipped(&mut tab_a, "list:1", 1).await;
    expect_event(&mut tab_a, "2", 2).await;
    expect_event(&mut tab_a, "3", 3).await;
    expect_event(&mut tab_b, "1", 1).await;
    expect_event(&mut tab_b, "2", 2).await;
    // A seed client left out gets nothing at all; the others stay byte for byte the seed's.
    assert_eq!(
        recv_text(&mut seed_excluded).await,
        event_text("list:1", "1")
    );
    assert_eq!(
        recv_text(&mut seed_excluded).await,
        event_text("list:1", "3")
    );
    for id in ["1", "2", "3"] {
        assert_eq!(recv_text(&mut seed).await, event_text("list:1", id));
    }
}

#[tokio::test]
async fn only_users_and_exclude_users_over_http() {
    let server = start_server().await;
    let mut seven = client(&server, "7", None).await;
    let mut eight = client(&server, "8", None).await;
    let mut nine = client(&server, "9", None).await;
    subscribe_tracking(&mut seven, "list:2").await;
    subscribe_tracking(&mut eight, "list:2").await;
    subscribe(&mut nine, "list:2").await;
    let mut only = event_json("list:2", "11");
    only["only_users"] = json!(["7"]);
    assert_eq!(server.publish_http(&only).await, 1);
    let mut except = event_json("list:2", "12");
    except["exclude_users"] = json!(["7", "unknown"]);
    assert_eq!(server.publish_http(&except).await, 2);

    expect_event(&mut seven, "11", 1).await;
    expect_skipped(&mut seven, "list:2", 2).await;
    expect_skipped(&mut eight, "list:2", 1).await;
    expect_event(&mut eight, "12", 2).await;
    // The seed client (no positions asked) only gets what is for it; the audience fields
    // never reach a subscriber.
    assert_eq!(recv_text(&mut nine).await, event_text("list:2", "12"));
    // Both lists at once: only 7 and 8, but not 8.
    let mut both = event_json("list:2", "13");
    both["only_users"] = json!(["7", "8"]);
    both["exclude_users"] = json!(["8"]);
    assert_eq!(server.publish_http(&both).await, 1);
    expect_event(&mut seven, "13", 3).await;
    expect_skipped(&mut eight, "list:2", 3).await;
}

#[tokio::test]
async fn a_replay_honours_the_audience_and_an_excluded_user_never_gets_the_payload() {
    let server = start_server().await;
    let tidings = &server.tidings;
    let tidings_server::Stamp(stamp) = tidings
        .read_stamp(&[tidings_server::protocol::Topic::list(3)])
        .await
        .unwrap();
    let quiet = stamp.0[0].clone();
    tidings.publish(event("list:3", "1")).await.unwrap();
    // The secret one: not for user 7.
    tidings
        .publish_to(
            event("list:3", "666"),
            Audience::everyone().exclude_users(["7"]),
        )
        .await
        .unwrap();
    tidings
        .publish_to(event("list:3", "3"), Audience::everyone().only_users(["7"]))
        .await
        .unwrap();
    tidings
        .publish_to(
            event("list:3", "4"),
            Audience::everyone().exclude_connection("tab-8"),
        )
        .await
        .unwrap();
    let since = json!({"action": "subscribe", "topic": "list:3", "position": true,
        "since": {"seq": 0, "epoch": quiet.epoch}})
    .to_string();

    // User 7 recovers everything from the start: the secret is a `skipped` frame.
    let mut seven = client(&server, "7", Some("tab-7")).await;
    send(&mut seven, &since).await;
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(recv_raw(&mut seven).await);
    }
    assert!(
        frames.iter().all(|f| !f.contains("666")),
        "the payload leaked: {frames:?}"
    );
    let seqs: Vec<Value> = frames
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .collect();
    assert_eq!(seqs[0]["data"]["entity_id"], "1");
    assert_eq!(seqs[1]["action"], "skipped");
    assert_eq!(seqs[1]["seq"], 2);
    assert_eq!(seqs[2]["data"]["entity_id"], "3");
    assert_eq!(seqs[3]["data"]["entity_id"], "4");
    assert_eq!(seqs[4]["action"], "subscribed");
    assert_eq!(seqs[4]["recovered"], true);
    assert_eq!(seqs[4]["seq"], 4);

    // User 8 on the excluded connection: 1 and 2, skipped 3 (only 7) and 4 (its own echo).
    let mut eight = client(&server, "8", Some("tab-8")).await;
    send(&mut eight, &since).await;
    expect_event(&mut eight, "1", 1).await;
    expect_event(&mut eight, "666", 2).await;
    expect_skipped(&mut eight, "list:3", 3).await;
    expect_skipped(&mut eight, "list:3", 4).await;
    assert_eq!(next_json(&mut eight).await["recovered"], true);

    // Live after the replay, the audience still holds.
    tidings
        .publish_to(
            event("list:3", "667"),
            Audience::everyone().exclude_users(["7"]),
        )
        .await
        .unwrap();
    expect_skipped(&mut seven, "list:3", 5).await;
    expect_event(&mut eight, "667", 5).await;
}

#[tokio::test]
async fn a_bad_connection_id_is_refused_with_400() {
    let server = start_server().await;
    let token = mint_token("42");
    for bad in ["a%20b", "", "%C3%A9", &"x".repeat(65)] {
        let url = format!("{}&cid={bad}", server.ws_url(&token));
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{bad}");
            }
            other => panic!("{bad}: expected a 400, got {other:?}"),
        }
    }
    let ok = format!("{}&cid={}", server.ws_url(&token), "x".repeat(64));
    let mut ws = connect(&ok).await;
    subscribe(&mut ws, "list:1").await;
}

#[tokio::test]
async fn audiences_over_the_bounds_are_refused_and_nothing_is_published() {
    let server = start_server_with(Config::new(SECRET).with_max_audience_users(3)).await;
    let mut ws = server.client().await;
    assert_eq!(subscribe_tracking(&mut ws, "list:4").await, 0);
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(server.http_url("/publish"))
            .bearer_auth(mint_publish_token())
            .json(&body)
            .send()
    };
    let mut many = event_json("list:4", "1");
    many["only_users"] = json!(["1", "2", "3", "4"]);
    let mut bad_cid = event_json("list:4", "1");
    bad_cid["exclude_connection"] = json!("a b");
    let mut wrong_type = event_json("list:4", "1");
    wrong_type["exclude_users"] = json!("7");
    for (body, needle) in [
        (many, "only_users lists 4 user ids; at most 3"),
        (bad_cid, "exclude_connection is not a valid connection id"),
        (wrong_type, "invalid type"),
    ] {
        let response = post(body).await.unwrap();
        assert_eq!(response.status(), 422);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "Invalid event");
        assert!(
            error["details"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    let refused = server
        .tidings
        .publish_to(
            event("list:4", "1"),
            Audience::everyone().exclude_users(["1", "2", "3", "4"]),
        )
        .await;
    assert!(
        matches!(refused, Err(BrokerError::Audience(_))),
        "{refused:?}"
    );
    // At the bound: accepted. Nothing before it was published (seq 1).
    let mut three = event_json("list:4", "2");
    three["exclude_users"] = json!(["1", "2", "3"]);
    assert_eq!(server.publish_http(&three).await, 1);
    expect_event(&mut ws, "2", 1).await;
}

/// `POST /publish/batch` takes the same audience fields per event as `/publish`: each event is
/// filtered by its own audience and counts only the subscribers it reached; an audience over
/// the bound is that event's 422, the others are published.
#[tokio::test]
async fn a_batch_takes_an_audience_per_event() {
    let server = start_server_with(Config::new(SECRET).with_max_audience_users(2)).await;
    let mut seven = client(&server, "7", Some("tab-7")).await;
    let mut eight = client(&server, "8", Some("tab-8")).await;
    assert_eq!(subscribe_tracking(&mut seven, "list:5").await, 0);
    assert_eq!(subscribe_tracking(&mut eight, "list:5").await, 0);
    let with = |id: &str, field: &str, value: Value| {
        let mut body = event_json("list:5", id);
        body[field] = value;
        body
    };
    let batch = json!([
        with("1", "exclude_connection", json!("tab-7")),
        with("2", "only_users", json!(["7"])),
        with("9", "exclude_users", json!(["1", "2", "3"])),
        event_json("list:5", "3"),
    ]);
    let response = reqwest::Client::new()
        .post(server.http_url("/publish/batch"))
        .bearer_auth(mint_publish_token())
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0], json!({"delivered": 1}), "{answer}");
    assert_eq!(results[1], json!({"delivered": 1}), "{answer}");
    assert_eq!(results[2]["status"], 422, "{answer}");
    assert!(
        results[2]["details"]
            .as_str()
            .unwrap()
            .contains("exclude_users lists 3 user ids; at most 2"),
        "{answer}"
    );
    assert_eq!(results[3], json!({"delivered": 2}), "{answer}");
    // The refused event took no `seq`: the third published one is 3.
    expect_skipped(&mut seven, "list:5", 1).await;
    expect_event(&mut seven, "2", 2).await;
    expect_event(&mut seven, "3", 3).await;
    expect_event(&mut eight, "1", 1).await;
    expect_skipped(&mut eight, "list:5", 2).await;
    expect_event(&mut eight, "3", 3).await;
}

/// A measurement, not a test: what an audience costs the publisher on one topic with 1,000
/// position-tracking subscribers (in-memory broker), as the median time of `publish_to` (it
/// returns once the event is queued for every subscriber). Run with
/// `cargo test --release -p tidings-server --test it -- --ignored --nocapture audience::cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it by name"]
async fn cost_of_an_audience_per_publish() {
    const SUBSCRIBERS: usize = 1000;
    const ROUNDS: usize = 60;
    let server = start_server_with(
        Config::new(SECRET)
            .with_handshake_rate_per_ip(10_000, 10_000)
            .with_history_size(0),
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut ws = client(&server, &format!("u{i}"), Some(&format!("c{i}"))).await;
        subscribe_tracking(&mut ws, "list:9").await;
        clients.push(ws);
    }
    let half: Vec<String> = (0..SUBSCRIBERS / 2).map(|i| format!("u{i}")).collect();
    let kinds: [(&str, Audience); 4] = [
        ("everyone", Audience::everyone()),
        (
            "exclude_connection",
            Audience::everyone().exclude_connection("c0"),
        ),
        (
            "exclude_users (500 ids)",
            Audience::everyone().exclude_users(half.clone()),
        ),
        (
            "only_users (500 ids)",
            Audience::everyone().only_users(half),
        ),
    ];
    for (name, audience) in kinds {
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            let started = std::time::Instant::now();
            server
                .tidings
                .publish_to(event("list:9", "1"), audience.clone())
                .await
                .unwrap();
            times.push(started.elapsed());
            // Let the writers drain (the measurement is the publisher's, not the sockets').
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        times.sort();
        println!(
            "audience cost: {name}: median {:?} per publish to {SUBSCRIBERS} subscribers",
            times[ROUNDS / 2]
        );
    }
    drop(clients);
}
