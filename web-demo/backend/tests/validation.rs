//! Bad input gets a 4xx with a JSON `{"error"}` (never a 500) and publishes nothing.

mod common;

use common::Demo;
use serde_json::json;
use tidings_protocol::EventType;

#[tokio::test]
async fn bad_requests_are_4xx_json_and_publish_nothing() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let mut sub = demo
        .subscribe(
            &mom.token,
            &["list:1", "list-items:all", "gifts:all", "occasion:1"],
        )
        .await;

    // (method, path, body, expected status)
    let cases: Vec<(&str, &str, Option<&str>, u16)> = vec![
        // malformed JSON
        ("POST", "/api/lists/1/items", Some("{\"name\": "), 400),
        ("PUT", "/api/items/1/status", Some("not json"), 400),
        // unknown ids
        ("POST", "/api/lists/999/items", Some(r#"{"name":"x"}"#), 404),
        ("PATCH", "/api/items/999", Some(r#"{"name":"x"}"#), 404),
        (
            "PUT",
            "/api/items/999/status",
            Some(r#"{"status":"IDEA"}"#),
            404,
        ),
        (
            "PUT",
            "/api/items/999/assignee",
            Some(r#"{"assignee_id":1}"#),
            404,
        ),
        (
            "POST",
            "/api/items/999/comments",
            Some(r#"{"body":"hi"}"#),
            404,
        ),
        ("DELETE", "/api/items/999", None, 404),
        ("PATCH", "/api/gifts/999", Some(r#"{"name":"x"}"#), 404),
        ("DELETE", "/api/gifts/999", None, 404),
        ("PATCH", "/api/occasions/999", Some(r#"{"name":"x"}"#), 404),
        ("GET", "/api/lists/999", None, 404),
        ("GET", "/api/occasions/999", None, 404),
        ("GET", "/api/nope", None, 404),
        ("PUT", "/api/lists", Some("{}"), 405),
        // malformed id
        ("GET", "/api/items/abc", None, 400),
        // empty / too long names, empty edits and comments
        ("POST", "/api/lists/1/items", Some(r#"{"name":"   "}"#), 422),
        (
            "POST",
            "/api/lists/1/items",
            Some(r#"{"notes":"no name"}"#),
            422,
        ),
        ("PATCH", "/api/items/1", Some(r#"{"name":""}"#), 422),
        ("PATCH", "/api/items/1", Some("{}"), 422),
        (
            "POST",
            "/api/items/1/comments",
            Some(r#"{"body":" "}"#),
            422,
        ),
        // unknown status, wrong types, unknown fields, unknown referenced members
        (
            "PUT",
            "/api/items/1/status",
            Some(r#"{"status":"LOST"}"#),
            422,
        ),
        // (serde_json reports a number where an enum's name belongs as a syntax error)
        ("PUT", "/api/items/1/status", Some(r#"{"status":3}"#), 400),
        ("PATCH", "/api/items/1", Some(r#"{"nmae":"typo"}"#), 422),
        (
            "PUT",
            "/api/items/1/assignee",
            Some(r#"{"assignee_id":42}"#),
            422,
        ),
        (
            "POST",
            "/api/gifts",
            Some(r#"{"occasion_id":1,"recipient_id":42,"name":"x"}"#),
            422,
        ),
        (
            "POST",
            "/api/gifts",
            Some(r#"{"occasion_id":42,"recipient_id":1,"name":"x"}"#),
            422,
        ),
        ("PATCH", "/api/gifts/1", Some(r#"{"status":"EATEN"}"#), 422),
        (
            "POST",
            "/api/occasions",
            Some(r#"{"name":"x","date":"2026-13-01"}"#),
            422,
        ),
        ("POST", "/api/login", Some(r#"{"member_id":42}"#), 422),
    ];
    for (method, path, body, want) in cases {
        let (status, json) = mom.raw(method, path, body.map(str::to_owned), true).await;
        assert_eq!(status, want, "{method} {path} {body:?} -> {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {json}"
        );
    }
    // A too-long name.
    let long = "x".repeat(201);
    let (status, _) = mom
        .call("POST", "/api/lists/1/items", Some(json!({ "name": long })))
        .await;
    assert_eq!(status, 422);
    // Wrong content type.
    let res = mom
        .http
        .post(format!("{}/api/lists/1/items", demo.base))
        .bearer_auth(&mom.token)
        .header("content-type", "text/plain")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let json: serde_json::Value = res.json().await.unwrap();
    assert!(json["error"].is_string());

    sub.assert_quiet().await;
    // The next event is the next valid change: nothing was queued by the failures.
    let (status, _) = mom
        .call(
            "PUT",
            "/api/items/1/status",
            Some(json!({"status": "RECEIVED"})),
        )
        .await;
    assert_eq!(status, 200);
    let e = sub.next_event().await;
    assert_eq!(
        (e.topic.as_str(), e.event, e.data.entity_id.as_str()),
        ("list:1", EventType::StatusChanged, "1")
    );
    demo.stop().await;
}

#[tokio::test]
async fn mutations_need_a_valid_bearer_token() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let mut sub = demo.subscribe(&mom.token, &["list-items:all"]).await;
    let body = Some(r#"{"name":"sneaky"}"#.to_owned());

    let (status, json) = mom
        .raw("POST", "/api/lists/1/items", body.clone(), false)
        .await;
    assert_eq!(status, 401, "{json}");
    assert!(json["error"].is_string());

    let forged = common::Api {
        token: format!("{}x", mom.token),
        base: mom.base.clone(),
        http: mom.http.clone(),
    };
    let (status, _) = forged
        .raw("POST", "/api/lists/1/items", body.clone(), true)
        .await;
    assert_eq!(status, 401);
    let (status, _) = forged.call("GET", "/api/me", None).await;
    assert_eq!(status, 401);

    // A token signed with another secret is refused too.
    let other = Demo::start_with(tidings_demo::DemoConfig {
        jwt_secret: Some("another-secret".into()),
        ..tidings_demo::DemoConfig::new(":memory:")
    })
    .await;
    let foreign = other.login(1).await;
    let stranger = common::Api {
        base: mom.base.clone(),
        ..foreign
    };
    let (status, _) = stranger.raw("POST", "/api/lists/1/items", body, true).await;
    assert_eq!(status, 401);

    let (status, me) = mom.call("GET", "/api/me", None).await;
    assert_eq!((status, me["name"].as_str()), (200, Some("Mom")));
    sub.assert_quiet().await;
    other.stop().await;
    demo.stop().await;
}

/// Names and texts refuse NUL, control characters and the invisible bidirectional formatting
/// characters (which can make "Mom" read as something else) with a 422 naming the field, on
/// every write endpoint that takes text; free text keeps its line breaks and tabs.
#[tokio::test]
async fn control_characters_and_bidi_overrides_are_refused_with_the_field() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let mut sub = demo
        .subscribe(
            &mom.token,
            &[
                "list:1",
                "list-items:all",
                "gifts:all",
                "occasion:1",
                "lists:all",
                "occasions:all",
            ],
        )
        .await;
    let bad = [
        '\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{202A}', '\u{202B}', '\u{202C}',
        '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{200E}',
        '\u{200F}', '\u{061C}', '\u{2028}',
    ];
    // (method, path, the body's other fields, the text field)
    let endpoints = [
        ("POST", "/api/lists/1/items", json!({"name": "ok"}), "name"),
        ("POST", "/api/lists/1/items", json!({"name": "ok"}), "notes"),
        ("PATCH", "/api/items/1", json!({}), "name"),
        ("PATCH", "/api/items/1", json!({}), "notes"),
        ("POST", "/api/items/4/comments", json!({}), "body"),
        (
            "POST",
            "/api/gifts",
            json!({"occasion_id": 1, "recipient_id": 2, "name": "ok"}),
            "name",
        ),
        (
            "POST",
            "/api/gifts",
            json!({"occasion_id": 1, "recipient_id": 2, "name": "ok"}),
            "notes",
        ),
        ("PATCH", "/api/gifts/2", json!({}), "name"),
        ("PATCH", "/api/gifts/2", json!({}), "notes"),
        (
            "POST",
            "/api/occasions",
            json!({"name": "ok", "date": "2027-01-01"}),
            "name",
        ),
        (
            "POST",
            "/api/occasions",
            json!({"name": "ok", "date": "2027-01-01"}),
            "notes",
        ),
        ("PATCH", "/api/occasions/1", json!({}), "name"),
        ("PATCH", "/api/occasions/1", json!({}), "notes"),
        ("POST", "/api/lists", json!({"name": "ok"}), "name"),
        ("PATCH", "/api/lists/2", json!({}), "name"),
    ];
    for (method, path, base, field) in &endpoints {
        for c in bad {
            let mut body = base.clone();
            body[*field] = json!(format!("Mo{c}m"));
            let (status, answer) = mom.call(method, path, Some(body)).await;
            assert_eq!(
                status, 422,
                "{method} {path} {field} U+{:04X}: {answer}",
                c as u32
            );
            assert_eq!(answer["field"], *field, "{answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!("{field}: contains U+{:04X}", c as u32)),
                "{error}"
            );
        }
    }
    // A line break is text, not a name.
    let (status, answer) = mom
        .call(
            "POST",
            "/api/lists/1/items",
            Some(json!({"name": "two\nlines"})),
        )
        .await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("name")));
    sub.assert_quiet().await;
    let (status, item) = mom
        .call(
            "POST",
            "/api/lists/1/items",
            Some(json!({"name": "Kite ✓ 凧 عربي", "notes": "line one\n\tline two"})),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    assert_eq!(item["notes"], "line one\n\tline two");
    assert_eq!(item["name"], "Kite ✓ 凧 عربي");
    demo.stop().await;
}
