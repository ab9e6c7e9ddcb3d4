//! Tests against a tiny in-test broker on 127.0.0.1:0 that answers with canned,
//! kafka-protocol-encoded responses. It proves framing, correlation ids, pipelining,
//! the KIP-511 handshake, version negotiation and the Client's routing, without a real
//! broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest,
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, Message, StrBytes,
};
use kafka_protocol::records::RecordBatchDecoder;
use sluice_client::{Client, ClientConfig, ClientError, Connection, NewTopic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The fake broker
// ---------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Behaviour {
    /// Refuse ApiVersions above this version with UNSUPPORTED_VERSION (KIP-511).
    api_versions_max: Option<i16>,
    /// Include the ApiVersions range in that refusal.
    advertise_api_versions_range_in_refusal: bool,
    /// Highest Metadata version advertised.
    metadata_max: Option<i16>,
    /// Hold this many Metadata responses and send them in reverse order.
    reverse_metadata_batch: usize,
    /// Close the connection on the first Metadata request.
    close_on_metadata: bool,
    /// Never answer Metadata requests.
    swallow_metadata: bool,
}

#[derive(Default)]
struct Log {
    next_offset: i64,
    /// (base offset, last offset, batch bytes)
    batches: Vec<(i64, i64, Bytes)>,
}

#[derive(Default)]
struct State {
    /// Topic name -> (id, partitions)
    topics: BTreeMap<String, (Uuid, i32)>,
    logs: HashMap<(String, i32), Log>,
    /// (api key, version, correlation id) of every request, in arrival order.
    seen: Vec<(i16, i16, i32)>,
    /// Error code to answer the next Produce with.
    fail_next_produce: Option<i16>,
    /// Dynamic topic configs.
    configs: BTreeMap<String, BTreeMap<String, String>>,
}

struct Fake {
    addr: String,
    behaviour: Behaviour,
    state: Mutex<State>,
}

impl Fake {
    async fn start(behaviour: Behaviour) -> Arc<Fake> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Fake {
            addr: listener.local_addr().unwrap().to_string(),
            behaviour,
            state: Mutex::new(State::default()),
        });
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(sock));
            }
        });
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn seen(&self, key: ApiKey) -> Vec<(i16, i32)> {
        self.state()
            .seen
            .iter()
            .filter(|(k, _, _)| *k == key as i16)
            .map(|&(_, v, c)| (v, c))
            .collect()
    }

    fn add_topic(&self, name: &str, partitions: i32) {
        let id = Uuid::from_u128((0x51u128 << 64) | (self.state().topics.len() as u128 + 1));
        self.state()
            .topics
            .insert(name.to_string(), (id, partitions));
    }

    async fn serve(self: Arc<Self>, sock: TcpStream) {
        let (mut rd, mut wr) = sock.into_split();
        let mut held: Vec<Bytes> = Vec::new();
        while let Ok(len) = rd.read_i32().await {
            let mut frame = BytesMut::zeroed(len as usize);
            rd.read_exact(&mut frame).await.unwrap();
            let mut buf = frame.freeze();
            let header = decode_request_header_from_buffer(&mut buf).unwrap();
            let (key, v, corr) = (
                header.request_api_key,
                header.request_api_version,
                header.correlation_id,
            );
            assert_eq!(header.client_id.as_deref(), Some("fake-test"));
            self.state().seen.push((key, v, corr));
            let api = ApiKey::try_from(key).unwrap();
            let reply = match api {
                ApiKey::ApiVersions => Some(self.api_versions(v, corr)),
                ApiKey::Metadata => {
                    if self.behaviour.close_on_metadata {
                        return;
                    }
                    if self.behaviour.swallow_metadata {
                        continue;
                    }
                    let req = MetadataRequest::decode(&mut buf, v).unwrap();
                    let resp = self.metadata(&req);
                    let frame = response_frame(api, v, corr, &resp);
                    if self.behaviour.reverse_metadata_batch > 1 {
                        held.push(frame);
                        if held.len() == self.behaviour.reverse_metadata_batch {
                            for frame in held.drain(..).rev() {
                                wr.write_all(&frame).await.unwrap();
                            }
                        }
                        continue;
                    }
                    Some(frame)
                }
                ApiKey::Produce => {
                    let req = ProduceRequest::decode(&mut buf, v).unwrap();
                    let resp = self.produce(&req, v);
                    (req.acks != 0).then(|| response_frame(api, v, corr, &resp))
                }
                ApiKey::Fetch => {
                    let req = FetchRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.fetch(&req, v)))
                }
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.list_offsets(&req)))
                }
                ApiKey::CreateTopics => {
                    let req = CreateTopicsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.create_topics(&req)))
                }
                ApiKey::DeleteTopics => {
                    let req = DeleteTopicsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.delete_topics(&req, v)))
                }
                ApiKey::CreatePartitions => {
                    let req = CreatePartitionsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.create_partitions(&req)))
                }
                ApiKey::DescribeConfigs => {
                    let req = DescribeConfigsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.describe_configs(&req)))
                }
                ApiKey::AlterConfigs => {
                    let req = AlterConfigsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.alter_configs(&req)))
                }
                ApiKey::IncrementalAlterConfigs => {
                    let req = IncrementalAlterConfigsRequest::decode(&mut buf, v).unwrap();
                    Some(response_frame(api, v, corr, &self.incremental_alter(&req)))
                }
                ApiKey::DescribeCluster => {
                    let resp = DescribeClusterResponse::default()
                        .with_cluster_id(StrBytes::from_static_str("fake-cluster"))
                        .with_controller_id(BrokerId(1))
                        .with_brokers(vec![DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(1))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(9092)]);
                    Some(response_frame(api, v, corr, &resp))
                }
                other => panic!("fake broker got unexpected {other:?}"),
            };
            if let Some(frame) = reply {
                wr.write_all(&frame).await.unwrap();
            }
        }
    }

    fn api_versions(&self, v: i16, corr: i32) -> Bytes {
        let api_key = ApiKey::ApiVersions;
        if let Some(max) = self.behaviour.api_versions_max.filter(|max| v > *max) {
            // KIP-511: answer a too-new ApiVersions with a v0 body.
            let keys = if self.behaviour.advertise_api_versions_range_in_refusal {
                vec![range(api_key, 0, max)]
            } else {
                vec![]
            };
            let resp = ApiVersionsResponse::default()
                .with_error_code(35)
                .with_api_keys(keys);
            return response_frame(api_key, 0, corr, &resp);
        }
        let mut keys: Vec<ApiVersion> = [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::CreatePartitions,
            ApiKey::DescribeConfigs,
            ApiKey::AlterConfigs,
            ApiKey::IncrementalAlterConfigs,
            ApiKey::DescribeCluster,
        ]
        .into_iter()
        .map(|k| range(k, k.valid_versions().min, k.valid_versions().max))
        .collect();
        keys.push(range(
            ApiKey::Metadata,
            0,
            self.behaviour
                .metadata_max
                .unwrap_or(MetadataRequest::VERSIONS.max),
        ));
        keys.push(range(
            api_key,
            0,
            self.behaviour.api_versions_max.unwrap_or(3),
        ));
        response_frame(
            api_key,
            v,
            corr,
            &ApiVersionsResponse::default().with_api_keys(keys),
        )
    }

    fn metadata(&self, req: &MetadataRequest) -> MetadataResponse {
        let state = self.state();
        let (host, port) = self.addr.rsplit_once(':').unwrap();
        let names: Vec<String> = match &req.topics {
            None => state.topics.keys().cloned().collect(),
            Some(ts) => ts
                .iter()
                .map(|t| t.name.as_ref().unwrap().0.to_string())
                .collect(),
        };
        let topics = names
            .into_iter()
            .map(|name| {
                let topic = MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
                match state.topics.get(&name) {
                    None => topic.with_error_code(3),
                    Some((id, parts)) => topic.with_topic_id(*id).with_partitions(
                        (0..*parts)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(1))
                                    .with_replica_nodes(vec![BrokerId(1)])
                                    .with_isr_nodes(vec![BrokerId(1)])
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        MetadataResponse::default()
            .with_cluster_id(Some(StrBytes::from_static_str("fake-cluster")))
            .with_controller_id(BrokerId(1))
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_string(host.to_string()))
                .with_port(port.parse().unwrap())])
            .with_topics(topics)
    }

    fn topic_of(&self, name: &TopicName, id: Uuid, v: i16) -> String {
        if v >= 13 {
            let state = self.state();
            let (name, _) = state.topics.iter().find(|(_, (i, _))| *i == id).unwrap();
            name.clone()
        } else {
            name.0.to_string()
        }
    }

    fn produce(&self, req: &ProduceRequest, v: i16) -> ProduceResponse {
        let t = &req.topic_data[0];
        let topic = self.topic_of(&t.name, t.topic_id, v);
        let p = &t.partition_data[0];
        let mut resp = PartitionProduceResponse::default().with_index(p.index);
        let mut state = self.state();
        if let Some(code) = state.fail_next_produce.take() {
            resp = resp.with_error_code(code);
        } else {
            let mut batch = BytesMut::from(&p.records.as_ref().unwrap()[..]);
            let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone().freeze()).unwrap();
            let log = state.logs.entry((topic, p.index)).or_default();
            let base = log.next_offset;
            batch[..8].copy_from_slice(&base.to_be_bytes());
            log.next_offset += i64::from(info[0].record_count);
            log.batches
                .push((base, log.next_offset - 1, batch.freeze()));
            resp = resp.with_base_offset(base);
        }
        ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
            .with_partition_responses(vec![resp])])
    }

    fn fetch(&self, req: &FetchRequest, v: i16) -> FetchResponse {
        let t = &req.topics[0];
        let topic = self.topic_of(&t.topic, t.topic_id, v);
        let p = &t.partitions[0];
        let state = self.state();
        let log = state.logs.get(&(topic, p.partition));
        let mut records = BytesMut::new();
        let mut hw = 0;
        if let Some(log) = log {
            hw = log.next_offset;
            for (_, last, batch) in &log.batches {
                if *last >= p.fetch_offset {
                    records.put_slice(batch);
                }
            }
        }
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(t.topic.clone())
            .with_topic_id(t.topic_id)
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(hw)
                .with_last_stable_offset(hw)
                .with_log_start_offset(0)
                .with_records(Some(records.freeze()))])])
    }

    fn list_offsets(&self, req: &ListOffsetsRequest) -> ListOffsetsResponse {
        let t = &req.topics[0];
        let p = &t.partitions[0];
        let state = self.state();
        let end = state
            .logs
            .get(&(t.name.0.to_string(), p.partition_index))
            .map_or(0, |l| l.next_offset);
        let offset = if p.timestamp == -2 { 0 } else { end };
        ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
            .with_name(t.name.clone())
            .with_partitions(vec![ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_offset(offset)
                .with_timestamp(-1)])])
    }

    fn create_topics(&self, req: &CreateTopicsRequest) -> CreateTopicsResponse {
        let results = req
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let result = CreatableTopicResult::default().with_name(t.name.clone());
                if self.state().topics.contains_key(&name) {
                    result
                        .with_error_code(36)
                        .with_error_message(Some(StrBytes::from_static_str("exists")))
                } else {
                    self.add_topic(&name, t.num_partitions);
                    result
                        .with_num_partitions(t.num_partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_topic_id(self.state().topics[&name].0)
                }
            })
            .collect();
        CreateTopicsResponse::default().with_topics(results)
    }
}

impl Fake {
    fn delete_topics(&self, req: &DeleteTopicsRequest, v: i16) -> DeleteTopicsResponse {
        let names: Vec<TopicName> = if v >= 6 {
            req.topics.iter().map(|t| t.name.clone().unwrap()).collect()
        } else {
            req.topic_names.clone()
        };
        let responses = names
            .into_iter()
            .map(|name| {
                let gone = self.state().topics.remove(name.0.as_str()).is_some();
                DeletableTopicResult::default()
                    .with_name(Some(name))
                    .with_error_code(if gone { 0 } else { 3 })
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    }

    fn create_partitions(&self, req: &CreatePartitionsRequest) -> CreatePartitionsResponse {
        let t = &req.topics[0];
        let mut state = self.state();
        let (_, parts) = state.topics.get_mut(t.name.0.as_str()).unwrap();
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let result = if t.count <= *parts {
            result
                .with_error_code(37)
                .with_error_message(Some(StrBytes::from_static_str("cannot shrink")))
        } else {
            *parts = t.count;
            result
        };
        CreatePartitionsResponse::default().with_results(vec![result])
    }

    fn describe_configs(&self, req: &DescribeConfigsRequest) -> DescribeConfigsResponse {
        let r = &req.resources[0];
        let state = self.state();
        let dynamic = state
            .configs
            .get(r.resource_name.as_str())
            .cloned()
            .unwrap_or_default();
        let mut configs = vec![DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_static_str("cleanup.policy"))
            .with_value(Some(StrBytes::from_static_str("delete")))
            .with_config_source(5)];
        configs.extend(dynamic.into_iter().map(|(k, v)| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(k))
                .with_value(Some(StrBytes::from_string(v)))
                .with_config_source(1)
        }));
        DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            .with_configs(configs)])
    }

    fn alter_configs(&self, req: &AlterConfigsRequest) -> AlterConfigsResponse {
        let r = &req.resources[0];
        let configs = r
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_deref().unwrap().to_string()))
            .collect();
        self.state()
            .configs
            .insert(r.resource_name.to_string(), configs);
        AlterConfigsResponse::default().with_responses(vec![
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        ])
    }

    fn incremental_alter(
        &self,
        req: &IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let r = &req.resources[0];
        let mut state = self.state();
        let configs = state
            .configs
            .entry(r.resource_name.to_string())
            .or_default();
        for c in &r.configs {
            match c.config_operation {
                0 => {
                    configs.insert(c.name.to_string(), c.value.as_deref().unwrap().to_string());
                }
                1 => {
                    configs.remove(c.name.as_str());
                }
                op => panic!("unexpected op {op}"),
            }
        }
        IncrementalAlterConfigsResponse::default().with_responses(vec![
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        ])
    }
}

fn range(key: ApiKey, min: i16, max: i16) -> ApiVersion {
    ApiVersion::default()
        .with_api_key(key as i16)
        .with_min_version(min)
        .with_max_version(max)
}

fn response_frame<T: Encodable>(api: ApiKey, v: i16, corr: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, api.response_header_version(v))
        .unwrap();
    body.encode(&mut buf, v).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn config() -> ClientConfig {
    ClientConfig {
        retry_backoff: Duration::from_millis(1),
        ..ClientConfig::with_client_id("fake-test")
    }
}

fn metadata_for(topic: &str) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]))
}

fn b(s: &'static str) -> Option<Bytes> {
    Some(Bytes::from_static(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn handshake_and_single_request() {
    let fake = Fake::start(Behaviour::default()).await;
    let conn = Connection::connect(&fake.addr, config()).await.unwrap();
    assert_eq!(
        conn.broker_versions()
            .range(ApiKey::Metadata as i16)
            .map(|r| r.max),
        Some(MetadataRequest::VERSIONS.max)
    );
    let resp = conn.send(metadata_for("t")).await.unwrap();
    assert_eq!(resp.topics[0].error_code, 3);
    assert_eq!(resp.cluster_id.as_deref(), Some("fake-cluster"));
    // ApiVersions v3 first, then Metadata at the highest common version.
    assert_eq!(fake.seen(ApiKey::ApiVersions), [(3, 0)]);
    assert_eq!(
        fake.seen(ApiKey::Metadata),
        [(MetadataRequest::VERSIONS.max, 1)]
    );
}

#[tokio::test]
async fn pipelined_requests_are_matched_by_correlation_id() {
    const N: usize = 8;
    // The fake answers only once all N requests arrived, and in reverse order: every
    // request must be in flight at once, and answers must be routed by correlation id.
    let fake = Fake::start(Behaviour {
        reverse_metadata_batch: N,
        ..Behaviour::default()
    })
    .await;
    let conn = Arc::new(Connection::connect(&fake.addr, config()).await.unwrap());
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let conn = conn.clone();
        tasks.spawn(async move {
            let topic = format!("topic-{i}");
            let resp = conn.send(metadata_for(&topic)).await.unwrap();
            assert_eq!(resp.topics.len(), 1);
            assert_eq!(resp.topics[0].name.as_ref().unwrap().0.as_str(), topic);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mut ids: Vec<i32> = fake.seen(ApiKey::Metadata).iter().map(|s| s.1).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "distinct correlation ids");
}

#[tokio::test]
async fn kip511_retries_with_broker_api_versions_range() {
    let fake = Fake::start(Behaviour {
        api_versions_max: Some(2),
        advertise_api_versions_range_in_refusal: true,
        ..Behaviour::default()
    })
    .await;
    let conn = Connection::connect(&fake.addr, config()).await.unwrap();
    assert_eq!(fake.seen(ApiKey::ApiVersions), [(3, 0), (2, 1)]);
    assert!(conn
        .broker_versions()
        .range(ApiKey::Metadata as i16)
        .is_some());
}

#[tokio::test]
async fn kip511_falls_back_to_v0_without_range() {
    let fake = Fake::start(Behaviour {
        api_versions_max: Some(0),
        ..Behaviour::default()
    })
    .await;
    let conn = Connection::connect(&fake.addr, config()).await.unwrap();
    assert_eq!(fake.seen(ApiKey::ApiVersions), [(3, 0), (0, 1)]);
    conn.send(metadata_for("t")).await.unwrap();
}

#[tokio::test]
async fn negotiates_below_broker_max_and_honours_send_version() {
    let fake = Fake::start(Behaviour {
        metadata_max: Some(9),
        ..Behaviour::default()
    })
    .await;
    let conn = Connection::connect(&fake.addr, config()).await.unwrap();
    conn.send(metadata_for("t")).await.unwrap();
    conn.send_version(metadata_for("t"), 4).await.unwrap();
    conn.send_with_max(metadata_for("t"), 7).await.unwrap();
    let versions: Vec<i16> = fake.seen(ApiKey::Metadata).iter().map(|s| s.0).collect();
    assert_eq!(versions, [9, 4, 7]);
    // A version this crate cannot encode is refused before anything is sent.
    assert!(matches!(
        conn.send_version(ProduceRequest::default(), 0).await,
        Err(ClientError::UnsupportedVersion { api: 0, .. })
    ));
}

#[tokio::test]
async fn send_raw_round_trip() {
    let fake = Fake::start(Behaviour::default()).await;
    let conn = Connection::connect(&fake.addr, config()).await.unwrap();
    let mut body = BytesMut::new();
    metadata_for("raw").encode(&mut body, 12).unwrap();
    let resp = conn
        .send_raw(ApiKey::Metadata as i16, 12, body.freeze())
        .await
        .unwrap();
    let resp = MetadataResponse::decode(&mut resp.clone(), 12).unwrap();
    assert_eq!(resp.topics[0].name.as_ref().unwrap().0.as_str(), "raw");
    assert!(matches!(
        conn.send_raw(999, 0, Bytes::new()).await,
        Err(ClientError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn disconnect_fails_in_flight_and_later_requests() {
    let fake = Fake::start(Behaviour {
        close_on_metadata: true,
        ..Behaviour::default()
    })
    .await;
    let conn = Connection::connect(&fake.addr, config()).await.unwrap();
    assert!(matches!(
        conn.send(metadata_for("t")).await,
        Err(ClientError::Disconnected { .. })
    ));
    assert!(conn.is_closed());
    assert!(matches!(
        conn.send(metadata_for("t")).await,
        Err(ClientError::Disconnected { .. })
    ));
}

#[tokio::test]
async fn unanswered_request_times_out() {
    let fake = Fake::start(Behaviour {
        swallow_metadata: true,
        ..Behaviour::default()
    })
    .await;
    let conn = Connection::connect(
        &fake.addr,
        ClientConfig {
            // Long enough for the handshake on a loaded machine.
            request_timeout: Duration::from_millis(300),
            ..config()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        conn.send(metadata_for("t")).await,
        Err(ClientError::Timeout { .. })
    ));
    assert!(!conn.is_closed(), "a timeout does not close the connection");
}

#[tokio::test]
async fn connect_to_closed_port_is_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    assert!(matches!(
        Connection::connect(&addr, config()).await,
        Err(ClientError::Io { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_admin_produce_fetch() {
    let fake = Fake::start(Behaviour::default()).await;
    let client = Client::connect_with(&[fake.addr.as_str()], config())
        .await
        .unwrap();
    assert_eq!(client.cached_metadata().brokers[&1].addr(), fake.addr);

    let created = client
        .create_topics(
            &[NewTopic::new("orders", 2, 1).config("retention.ms", "1000")],
            false,
        )
        .await
        .unwrap();
    let orders = created["orders"].as_ref().unwrap();
    assert_eq!(orders.partitions, 2);
    assert!(!orders.topic_id.is_nil());
    let again = client
        .create_topics(&[NewTopic::new("orders", 2, 1)], false)
        .await
        .unwrap();
    let err = again["orders"].as_ref().unwrap_err();
    assert_eq!(err.code(), Some(36));
    assert!(matches!(
        err,
        ClientError::Kafka {
            name: "TopicAlreadyExists",
            ..
        }
    ));

    let md = client.metadata(Some(&["orders"])).await.unwrap();
    assert_eq!(md.topics["orders"].partitions.len(), 2);
    assert_eq!(md.topics["orders"].partition(1).unwrap().leader, 1);

    let base = client
        .produce("orders", 1, vec![(b("k1"), b("v1")), (None, b("v2"))], -1)
        .await
        .unwrap();
    assert_eq!(base, 0);
    let base = client
        .produce("orders", 1, vec![(b("k3"), None)], 1)
        .await
        .unwrap();
    assert_eq!(base, 2);
    // acks=0 gets no answer; the next request on the same connection still works.
    assert_eq!(
        client
            .produce("orders", 1, vec![(None, b("v4"))], 0)
            .await
            .unwrap(),
        -1
    );

    let fetched = client.fetch("orders", 1, 1, 1 << 20, 0, 0).await.unwrap();
    assert_eq!(fetched.high_watermark, 4);
    assert_eq!(fetched.log_start_offset, 0);
    let got: Vec<(i64, Option<Bytes>, Option<Bytes>)> = fetched
        .records
        .into_iter()
        .map(|r| (r.offset, r.key, r.value))
        .collect();
    assert_eq!(
        got,
        [(1, None, b("v2")), (2, b("k3"), None), (3, None, b("v4"))]
    );
    let raw = client
        .fetch_raw("orders", 1, 0, 1 << 20, 0, 0)
        .await
        .unwrap();
    assert_eq!(
        RecordBatchDecoder::decode_all(&mut raw.records.clone())
            .unwrap()
            .len(),
        3
    );

    assert_eq!(
        client.list_offsets("orders", 1, -1).await.unwrap().offset,
        4
    );
    assert_eq!(
        client.list_offsets("orders", 1, -2).await.unwrap().offset,
        0
    );

    // Topic ids are known from metadata, so v13+ (topic-id addressed) produce/fetch is used.
    assert!(fake.seen(ApiKey::Produce).iter().all(|s| s.0 >= 13));
    assert!(fake.seen(ApiKey::Fetch).iter().all(|s| s.0 >= 13));

    let err = client
        .produce("missing", 0, vec![(None, b("x"))], -1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(3), "{err}");
    let err = client.fetch("orders", 7, 0, 100, 0, 0).await.unwrap_err();
    assert_eq!(err.code(), Some(3), "{err}");
}

#[tokio::test]
async fn client_retries_after_not_leader() {
    let fake = Fake::start(Behaviour::default()).await;
    fake.add_topic("t", 1);
    let client = Client::connect_with(&[fake.addr.as_str()], config())
        .await
        .unwrap();
    fake.state().fail_next_produce = Some(6);
    let base = client
        .produce("t", 0, vec![(None, b("x"))], -1)
        .await
        .unwrap();
    assert_eq!(base, 0);
    assert_eq!(
        fake.seen(ApiKey::Produce).len(),
        2,
        "one failure, one retry"
    );
    // connect + first lookup + refresh after NOT_LEADER_OR_FOLLOWER
    assert_eq!(fake.seen(ApiKey::Metadata).len(), 3);

    // With retries off the error surfaces, mapped to ClientError::Kafka.
    let client = Client::connect_with(
        &[fake.addr.as_str()],
        ClientConfig {
            retries: 0,
            ..config()
        },
    )
    .await
    .unwrap();
    fake.state().fail_next_produce = Some(6);
    let err = client
        .produce("t", 0, vec![(None, b("x"))], -1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Kafka { code: 6, name: "NotLeaderOrFollower", context, .. } if context == "produce to t-0"),
        "{err}"
    );
}

#[tokio::test]
async fn topic_ids_unknown_caps_produce_and_fetch_at_v12() {
    // Metadata v9 carries no topic ids, so the client must address topics by name.
    let fake = Fake::start(Behaviour {
        metadata_max: Some(9),
        ..Behaviour::default()
    })
    .await;
    fake.add_topic("t", 1);
    let client = Client::connect_with(&[fake.addr.as_str()], config())
        .await
        .unwrap();
    client
        .produce("t", 0, vec![(None, b("x"))], -1)
        .await
        .unwrap();
    let fetched = client.fetch("t", 0, 0, 1 << 20, 0, 0).await.unwrap();
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(fake.seen(ApiKey::Produce)[0].0, 12);
    assert_eq!(fake.seen(ApiKey::Fetch)[0].0, 12);
}

#[tokio::test]
async fn empty_bootstrap_is_rejected() {
    let none: [&str; 0] = [];
    assert!(matches!(
        Client::connect(&none).await,
        Err(ClientError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn client_admin_configs_partitions_delete_cluster() {
    let fake = Fake::start(Behaviour::default()).await;
    fake.add_topic("t", 1);
    let client = Client::connect_with(&[fake.addr.as_str()], config())
        .await
        .unwrap();

    let cluster = client.describe_cluster().await.unwrap();
    assert_eq!(cluster.cluster_id, "fake-cluster");
    assert_eq!(cluster.controller_id, 1);
    assert_eq!(cluster.brokers[0].addr(), "127.0.0.1:9092");

    let configs = client.describe_configs("t").await.unwrap();
    assert!(configs["cleanup.policy"].is_default());
    assert_eq!(configs["cleanup.policy"].value.as_deref(), Some("delete"));

    client
        .incremental_alter_configs("t", &[("retention.ms", "10"), ("segment.ms", "5")], &[])
        .await
        .unwrap();
    client
        .incremental_alter_configs("t", &[], &["segment.ms"])
        .await
        .unwrap();
    let configs = client.describe_configs("t").await.unwrap();
    assert_eq!(configs["retention.ms"].value.as_deref(), Some("10"));
    assert!(!configs["retention.ms"].is_default());
    assert!(!configs.contains_key("segment.ms"));

    client
        .alter_configs("t", &[("max.message.bytes", "100")])
        .await
        .unwrap();
    let configs = client.describe_configs("t").await.unwrap();
    assert!(
        !configs.contains_key("retention.ms"),
        "legacy alter replaces all"
    );
    assert_eq!(configs["max.message.bytes"].value.as_deref(), Some("100"));

    client.create_partitions("t", 3).await.unwrap();
    assert_eq!(
        client.metadata(Some(&["t"])).await.unwrap().topics["t"]
            .partitions
            .len(),
        3
    );
    let err = client.create_partitions("t", 2).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Kafka { code: 37, message: Some(m), .. } if m == "cannot shrink"),
        "{err}"
    );

    let deleted = client.delete_topics(&["t", "nope"]).await.unwrap();
    assert!(deleted["t"].is_ok());
    assert_eq!(deleted["nope"].as_ref().unwrap_err().code(), Some(3));
    let md = client.metadata(Some(&["t"])).await.unwrap();
    assert_eq!(md.topics["t"].error_code, 3);
    assert!(!client.cached_metadata().topics.contains_key("t"));
}
