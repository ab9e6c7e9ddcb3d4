//! Consumer group protocol over the wire against an in-process broker: a two-member
//! rebalance, offset commits and their fencing, internal topic protection, and groups and
//! offsets that survive a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_client::{Connection, NewTopic};
use support::TestBroker;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn err(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

async fn start() -> TestBroker {
    TestBroker::start_with(|c| {
        c.group_initial_rebalance_delay = Duration::ZERO;
        c.offsets_topic_num_partitions = 3;
    })
    .await
}

fn join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

fn commit(
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    offset: i64,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

async fn fetched_offset(conn: &Connection, group: &str, topic: &str) -> i64 {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![0])]));
    let resp = conn.send_version(req, 7).await.unwrap();
    resp.topics[0].partitions[0].committed_offset
}

/// Joins as a new member (MEMBER_ID_REQUIRED round first) and returns the member id.
async fn member_id(conn: &Connection, group: &str) -> String {
    let first = conn.send_version(join(group, ""), 5).await.unwrap();
    assert_eq!(err(first.error_code), Some(ResponseError::MemberIdRequired));
    first.member_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_rebalance_commit_and_are_fenced() {
    let broker = start().await;
    let client = broker.client().await;
    client
        .create_topics(&[NewTopic::new("t", 1, 1)], false)
        .await
        .unwrap()["t"]
        .as_ref()
        .unwrap();
    let a_conn = client.any_connection().await.unwrap();
    let b_conn = Arc::new(
        Connection::connect(&broker.addr(), Default::default())
            .await
            .unwrap(),
    );

    let a = member_id(&a_conn, "g").await;
    let joined = a_conn.send_version(join("g", &a), 5).await.unwrap();
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader.as_str(), a);

    // b joins: a must rejoin before generation 2 forms.
    let b = member_id(&b_conn, "g").await;
    let b_join = {
        let (conn, b) = (b_conn.clone(), b.clone());
        tokio::spawn(async move { conn.send_version(join("g", &b), 5).await.unwrap() })
    };
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(1)
        .with_member_id(s(&a));
    // Wait (with a deadline) until b's join has started the rebalance.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = a_conn.send_version(hb.clone(), 3).await.unwrap();
        if err(r.error_code) == Some(ResponseError::RebalanceInProgress) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b's join never started a rebalance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a_join = a_conn.send_version(join("g", &a), 5).await.unwrap();
    let b_join = b_join.await.unwrap();
    assert_eq!((a_join.generation_id, b_join.generation_id), (2, 2));
    assert_eq!(a_join.members.len(), 2, "the leader sees both members");

    let sync = |member: &str, assignments: Vec<SyncGroupRequestAssignment>| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(2)
            .with_member_id(s(member))
            .with_assignments(assignments)
    };
    let b_sync = {
        let (conn, req) = (b_conn.clone(), sync(&b, vec![]));
        tokio::spawn(async move { conn.send_version(req, 3).await.unwrap() })
    };
    let assignments = vec![
        SyncGroupRequestAssignment::default()
            .with_member_id(s(&a))
            .with_assignment(Bytes::from_static(b"for-a")),
        SyncGroupRequestAssignment::default()
            .with_member_id(s(&b))
            .with_assignment(Bytes::from_static(b"for-b")),
    ];
    let a_sync = a_conn.send_version(sync(&a, assignments), 3).await.unwrap();
    assert_eq!(a_sync.assignment, Bytes::from_static(b"for-a"));
    assert_eq!(
        b_sync.await.unwrap().assignment,
        Bytes::from_static(b"for-b")
    );

    // Commits: current generation works; stale generation, unknown member and unknown group fail.
    let ok = a_conn
        .send_version(commit("g", 2, &a, "t", 5), 7)
        .await
        .unwrap();
    assert_eq!(ok.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetched_offset(&a_conn, "g", "t").await, 5);
    let stale = a_conn
        .send_version(commit("g", 1, &a, "t", 6), 7)
        .await
        .unwrap();
    assert_eq!(
        err(stale.topics[0].partitions[0].error_code),
        Some(ResponseError::IllegalGeneration)
    );
    let unknown = a_conn
        .send_version(commit("g", 2, "ghost", "t", 6), 7)
        .await
        .unwrap();
    assert_eq!(
        err(unknown.topics[0].partitions[0].error_code),
        Some(ResponseError::UnknownMemberId)
    );
    let no_group = a_conn
        .send_version(commit("nope", 3, "ghost", "t", 6), 7)
        .await
        .unwrap();
    assert_eq!(
        err(no_group.topics[0].partitions[0].error_code),
        Some(ResponseError::IllegalGeneration)
    );
    let no_topic = a_conn
        .send_version(commit("g", 2, &a, "missing", 1), 7)
        .await
        .unwrap();
    assert_eq!(
        err(no_topic.topics[0].partitions[0].error_code),
        Some(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(fetched_offset(&a_conn, "g", "t").await, 5);

    // An active group cannot be deleted; once both leave, it can.
    let del = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]);
    let r = a_conn.send_version(del.clone(), 2).await.unwrap();
    assert_eq!(
        err(r.results[0].error_code),
        Some(ResponseError::NonEmptyGroup)
    );
    for (conn, m) in [(&a_conn, &a), (&b_conn, &b)] {
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(m));
        assert_eq!(conn.send_version(leave, 2).await.unwrap().error_code, 0);
    }
    let r = a_conn.send_version(del, 2).await.unwrap();
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(fetched_offset(&a_conn, "g", "t").await, -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_survive_restart_and_internal_topic_is_protected() {
    let broker = start().await;
    let client = broker.client().await;
    client
        .create_topics(&[NewTopic::new("t", 1, 1)], false)
        .await
        .unwrap()["t"]
        .as_ref()
        .unwrap();
    let conn = client.any_connection().await.unwrap();
    // A group that only stores offsets: generation -1, no member.
    let r = conn
        .send_version(commit("simple", -1, "", "t", 42), 7)
        .await
        .unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    let e = client
        .produce(
            "__consumer_offsets",
            0,
            vec![(None, Some(Bytes::from_static(b"x")))],
            1,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.response_error(),
        Some(ResponseError::InvalidTopicException)
    );
    let deleted = client.delete_topics(&["__consumer_offsets"]).await.unwrap();
    assert_eq!(
        deleted["__consumer_offsets"]
            .as_ref()
            .unwrap_err()
            .response_error(),
        Some(ResponseError::InvalidTopicException)
    );

    let broker = broker.restart().await;
    let client = broker.client().await;
    let conn = client.any_connection().await.unwrap();
    assert_eq!(fetched_offset(&conn, "simple", "t").await, 42);
    let groups = conn
        .send_version(ListGroupsRequest::default(), 4)
        .await
        .unwrap();
    assert!(groups
        .groups
        .iter()
        .any(|g| g.group_id.0.as_str() == "simple"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_that_cannot_be_stored_is_refused_and_rebalanced() {
    let broker = TestBroker::start_with(|c| {
        c.group_initial_rebalance_delay = Duration::ZERO;
        c.offsets_topic_num_partitions = 3;
        c.message_max_bytes = 2048; // also the offsets topic's batch limit
    })
    .await;
    let client = broker.client().await;
    let conn = client.any_connection().await.unwrap();
    let m = member_id(&conn, "big").await;
    let joined = conn.send_version(join("big", &m), 5).await.unwrap();
    assert_eq!(joined.generation_id, 1);
    let sync = |assignment: Bytes, generation: i32| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("big")))
            .with_generation_id(generation)
            .with_member_id(s(&m))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&m))
                .with_assignment(assignment)])
    };
    let oversized = conn
        .send_version(sync(Bytes::from(vec![7u8; 4096]), 1), 3)
        .await
        .unwrap();
    assert_eq!(
        err(oversized.error_code),
        Some(ResponseError::UnknownServerError)
    );
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s("big")))
        .with_generation_id(1)
        .with_member_id(s(&m));
    assert_eq!(
        err(conn.send_version(hb, 3).await.unwrap().error_code),
        Some(ResponseError::RebalanceInProgress)
    );
    let rejoined = conn.send_version(join("big", &m), 5).await.unwrap();
    assert_eq!(rejoined.generation_id, 2);
    let ok = conn
        .send_version(sync(Bytes::from_static(b"small"), 2), 3)
        .await
        .unwrap();
    assert_eq!(
        (ok.error_code, ok.assignment),
        (0, Bytes::from_static(b"small"))
    );
}
