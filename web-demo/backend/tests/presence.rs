//! Presence in the demo: a login token carries the member's `name`, which the embedded server
//! puts in the member's presence `info` — what the avatars beside each list show.

mod common;

use common::Demo;
use serde_json::json;
use tidings_protocol::{ServerMessage, WSReply};

#[tokio::test]
async fn a_member_joining_a_list_is_seen_with_its_name() {
    let demo = Demo::start().await;
    let (mom, dad) = (demo.login(1).await, demo.login(2).await);
    let mut dad_ws = demo.subscribe(&dad.token, &[]).await;
    dad_ws
        .send(json!({"action": "subscribe", "topic": "list:1", "presence": "watch"}))
        .await;
    assert!(matches!(
        dad_ws.next_message().await,
        ServerMessage::Reply(WSReply::Subscribed { .. })
    ));
    match dad_ws.next_message().await {
        ServerMessage::Reply(WSReply::Presence { members, .. }) => {
            assert!(members.is_empty(), "{members:?}")
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }

    let mut mom_ws = demo.subscribe(&mom.token, &[]).await;
    mom_ws
        .send(json!({"action": "subscribe", "topic": "list:1", "presence": "join"}))
        .await;
    match dad_ws.next_message().await {
        ServerMessage::Reply(WSReply::PresenceJoin { member, .. }) => {
            assert_eq!(member.user_id, "1");
            assert_eq!(member.info.get(), r#"{"name":"Mom"}"#);
            assert_eq!(member.connections, 1);
        }
        other => panic!("expected Mom's join, got {other:?}"),
    }
    drop(mom_ws);
    match dad_ws.next_message().await {
        ServerMessage::Reply(WSReply::PresenceLeave { user_id, .. }) => assert_eq!(user_id, "1"),
        other => panic!("expected Mom's leave, got {other:?}"),
    }
    demo.stop().await;
}
