//! Hostile and malformed requests: the broker answers with a Kafka error or closes the
//! connection, never panics or aborts, and keeps serving everyone else.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;
use proptest::prelude::*;
use sluice_broker::apis::{self, Reply};
use sluice_broker::protocol::decode_request;
use sluice_broker::protocol::versions::SUPPORTED_APIS;
use support::TestBroker;

fn raw_frame(api: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&api.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&1i16.to_be_bytes());
    frame.push(b'x');
    let flexible = ApiKey::try_from(api)
        .map(|k| k.request_header_version(version) >= 2)
        .unwrap_or(false);
    if flexible {
        frame.push(0); // no tagged fields
    }
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

/// Sends one frame and returns what came back before the broker closed or answered.
fn exchange(addr: &str, frame: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(frame).unwrap();
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_err() {
        return Vec::new();
    }
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

async fn still_serves(broker: &TestBroker) {
    let client = broker.client().await;
    let md = client
        .metadata(None)
        .await
        .expect("metadata after hostile input");
    assert_eq!(md.brokers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_array_counts_close_the_connection_without_aborting() {
    let broker = TestBroker::start().await;
    let addr = broker.addr();
    let cases = vec![
        // Metadata v1: topics array claiming 2^31-1 entries.
        raw_frame(3, 1, &[0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']),
        // Metadata v9 (flexible): compact array claiming 2^32-2 entries.
        raw_frame(3, 9, &[0xff, 0xff, 0xff, 0xff, 0x0f, 2, b'a']),
        // Produce v3: topic_data claiming 2^31-1 entries.
        raw_frame(
            0,
            3,
            &[0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff],
        ),
        // Fetch v4: topics claiming 2^31-1 entries.
        raw_frame(
            1,
            4,
            &[
                0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0x7f, 0xff, 0xff,
                0xff,
            ],
        ),
    ];
    for frame in cases {
        let a = addr.clone();
        let reply = tokio::task::spawn_blocking(move || exchange(&a, &frame))
            .await
            .unwrap();
        assert!(
            reply.is_empty(),
            "expected the connection to be closed, got {reply:?}"
        );
        still_serves(&broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_and_unsupported_versions() {
    let broker = TestBroker::start().await;
    let addr = broker.addr();
    let replies = tokio::task::spawn_blocking(move || {
        (
            exchange(&addr, &raw_frame(999, 0, &[])),
            exchange(&addr, &raw_frame(0, 2, &[])), // Produce v2: below what we serve
            exchange(&addr, &raw_frame(18, 99, &[])), // ApiVersions v99: KIP-511
        )
    })
    .await
    .unwrap();
    assert!(
        replies.0.is_empty(),
        "unknown API key closes the connection"
    );
    assert!(
        replies.1.is_empty(),
        "unsupported version closes the connection"
    );
    // KIP-511: correlation id, then a v0 body: error 35 and our ranges.
    let r = replies.2;
    assert_eq!(&r[0..4], &7i32.to_be_bytes());
    assert_eq!(i16::from_be_bytes([r[4], r[5]]), 35);
    let count = i32::from_be_bytes([r[6], r[7], r[8], r[9]]) as usize;
    assert_eq!(count, SUPPORTED_APIS.len());
    still_serves(&broker).await;
}

/// Every supported request type, encoded from its default value at every advertised version.
fn encoded_defaults() -> Vec<(ApiKey, i16, Bytes)> {
    fn enc<T: Encodable + Default>(v: i16) -> Bytes {
        let mut b = BytesMut::new();
        T::default()
            .encode(&mut b, v)
            .expect("default requests encode");
        b.freeze()
    }
    let mut out = Vec::new();
    for &(api, min, max) in SUPPORTED_APIS {
        for v in min..=max {
            let body = match api {
                ApiKey::Produce => enc::<ProduceRequest>(v),
                ApiKey::Fetch => enc::<FetchRequest>(v),
                ApiKey::ListOffsets => enc::<ListOffsetsRequest>(v),
                ApiKey::Metadata => enc::<MetadataRequest>(v),
                ApiKey::ApiVersions => enc::<ApiVersionsRequest>(v),
                ApiKey::CreateTopics => enc::<CreateTopicsRequest>(v),
                ApiKey::DeleteTopics => enc::<DeleteTopicsRequest>(v),
                ApiKey::InitProducerId => enc::<InitProducerIdRequest>(v),
                ApiKey::DescribeConfigs => enc::<DescribeConfigsRequest>(v),
                ApiKey::AlterConfigs => enc::<AlterConfigsRequest>(v),
                ApiKey::CreatePartitions => enc::<CreatePartitionsRequest>(v),
                ApiKey::IncrementalAlterConfigs => enc::<IncrementalAlterConfigsRequest>(v),
                ApiKey::DescribeCluster => enc::<DescribeClusterRequest>(v),
                ApiKey::FindCoordinator => enc::<FindCoordinatorRequest>(v),
                ApiKey::JoinGroup => enc::<JoinGroupRequest>(v),
                ApiKey::SyncGroup => enc::<SyncGroupRequest>(v),
                ApiKey::Heartbeat => enc::<HeartbeatRequest>(v),
                ApiKey::LeaveGroup => enc::<LeaveGroupRequest>(v),
                ApiKey::OffsetCommit => enc::<OffsetCommitRequest>(v),
                ApiKey::OffsetFetch => enc::<OffsetFetchRequest>(v),
                ApiKey::ListGroups => enc::<ListGroupsRequest>(v),
                ApiKey::DescribeGroups => enc::<DescribeGroupsRequest>(v),
                ApiKey::DeleteGroups => enc::<DeleteGroupsRequest>(v),
                ApiKey::OffsetDelete => enc::<OffsetDeleteRequest>(v),
                ApiKey::AlterPartitionReassignments => enc::<AlterPartitionReassignmentsRequest>(v),
                ApiKey::ListPartitionReassignments => enc::<ListPartitionReassignmentsRequest>(v),
                ApiKey::UnregisterBroker => enc::<UnregisterBrokerRequest>(v),
                ApiKey::DescribeQuorum => enc::<DescribeQuorumRequest>(v),
                other => panic!("add {other:?} to this test"),
            };
            out.push((api, v, body));
        }
    }
    out
}

fn header(api: ApiKey, version: i16) -> BytesMut {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(&mut b, api.request_header_version(version))
        .unwrap();
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Mutated and truncated requests of every API and version never panic the handler.
    #[test]
    fn mutated_requests_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        extra in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let broker = shared_broker().await;
            let defaults = encoded_defaults();
            let (api, version, body) = &defaults[pick.index(defaults.len())];
            let mut frame = header(*api, *version);
            frame.put_slice(body);
            frame.put_slice(&extra);
            let mut frame = frame.to_vec();
            let len = frame.len();
            for (at, byte) in &flips {
                frame[at.index(len)] ^= byte;
            }
            frame.truncate(cut.index(len + 1).max(1));
            if let Ok(request) = decode_request(Bytes::from(frame)) {
                if let Ok(Reply::Later(f)) = apis::handle(broker, request, None, 0).await {
                    // Only a panic matters here; a join may wait for a rebalance.
                    let _ = tokio::time::timeout(Duration::from_millis(50), f).await;
                }
            }
        });
    }
}

/// One broker for all proptest cases (each case builds its own runtime).
async fn shared_broker() -> &'static std::sync::Arc<sluice_broker::broker::Broker> {
    static BROKER: std::sync::OnceLock<(
        std::sync::Arc<sluice_broker::broker::Broker>,
        tempfile::TempDir,
    )> = std::sync::OnceLock::new();
    if BROKER.get().is_none() {
        let t = TestBroker::start().await;
        // The broker's tasks die with this case's runtime; the handlers only need its state.
        let _ = BROKER.set((t.running.broker.clone(), t.dir));
    }
    &BROKER.get().unwrap().0
}
