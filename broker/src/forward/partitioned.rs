//! Requests addressed to partition leaders (Produce, Fetch, ListOffsets): their partitions,
//! the part of a request that one broker gets, merging the parts' answers, and the answer when
//! a leader cannot be reached. Pure functions over the protocol types.

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest,
    ProduceResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;

/// A partition of a request: indexes of its topic and of the partition within that topic.
pub type Slot = (usize, usize);

/// A request whose partitions each belong to their leader.
pub trait PartitionedRequest: Encodable + Sized {
    type Response: Decodable + Encodable + Default;

    /// Every partition: its slot, topic name and index.
    fn partitions(&self) -> Vec<(Slot, String, i32)>;
    /// The same request with only these partitions.
    fn subset(&self, slots: &[Slot]) -> Self;
    /// The answer when the leaders of all of this request's partitions cannot be reached:
    /// NOT_LEADER_OR_FOLLOWER, which makes a client refresh metadata and retry.
    fn unreachable(&self) -> Self::Response;
    /// One answer from the parts' answers (each covering distinct partitions).
    fn merge(&self, parts: Vec<Self::Response>) -> Self::Response;
}

fn keep<T: Clone>(items: &[T], wanted: impl Fn(usize) -> bool) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| wanted(*i))
        .map(|(_, t)| t.clone())
        .collect()
}

/// Every partition of `topics`: its slot, topic name and index.
fn list_partitions<T, P>(
    topics: &[T],
    name: impl Fn(&T) -> String,
    partitions: impl Fn(&T) -> &[P],
    index: impl Fn(&P) -> i32,
) -> Vec<(Slot, String, i32)> {
    let mut out = Vec::new();
    for (t, topic) in topics.iter().enumerate() {
        for (p, partition) in partitions(topic).iter().enumerate() {
            out.push(((t, p), name(topic), index(partition)));
        }
    }
    out
}

/// The topics of `slots`, each with only those partitions.
fn subset_topics<T: Clone, P: Clone>(
    topics: &[T],
    slots: &[Slot],
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
) -> Vec<T> {
    by_topic(slots)
        .into_iter()
        .map(|(t, ps)| {
            let mut topic = topics[t].clone();
            let kept = keep(partitions(&mut topic), |i| ps.contains(&i));
            *partitions(&mut topic) = kept;
            topic
        })
        .collect()
}

/// Groups `slots` by topic: for each topic index in request order, its partition indexes.
fn by_topic(slots: &[Slot]) -> std::collections::BTreeMap<usize, Vec<usize>> {
    let mut out: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &(t, p) in slots {
        out.entry(t).or_default().push(p);
    }
    out
}

/// Appends `topics` to `into`, merging the partitions of topics already there (by name).
fn merge_topics<T>(
    into: &mut Vec<T>,
    topics: Vec<T>,
    name: impl Fn(&T) -> String,
    extend: impl Fn(&mut T, T),
) {
    for topic in topics {
        match into.iter_mut().find(|t| name(t) == name(&topic)) {
            Some(existing) => extend(existing, topic),
            None => into.push(topic),
        }
    }
}

impl PartitionedRequest for ProduceRequest {
    type Response = ProduceResponse;

    fn partitions(&self) -> Vec<(Slot, String, i32)> {
        list_partitions(
            &self.topic_data,
            |t| t.name.0.to_string(),
            |t| &t.partition_data,
            |p| p.index,
        )
    }

    fn subset(&self, slots: &[Slot]) -> Self {
        let mut out = self.clone();
        out.topic_data = subset_topics(&self.topic_data, slots, |t| &mut t.partition_data);
        out
    }

    fn unreachable(&self) -> ProduceResponse {
        let mut response = ProduceResponse::default();
        response.responses = self
            .topic_data
            .iter()
            .map(|topic| {
                let mut t = TopicProduceResponse::default();
                t.name = topic.name.clone();
                t.topic_id = topic.topic_id;
                t.partition_responses = topic
                    .partition_data
                    .iter()
                    .map(|p| {
                        let mut r = PartitionProduceResponse::default();
                        r.index = p.index;
                        r.error_code = ResponseError::NotLeaderOrFollower.code();
                        r.base_offset = -1;
                        r.log_append_time_ms = -1;
                        r.log_start_offset = -1;
                        r
                    })
                    .collect();
                t
            })
            .collect();
        response
    }

    fn merge(&self, parts: Vec<ProduceResponse>) -> ProduceResponse {
        let mut out = ProduceResponse::default();
        for part in parts {
            out.throttle_time_ms = out.throttle_time_ms.max(part.throttle_time_ms);
            merge_topics(
                &mut out.responses,
                part.responses,
                |t| t.name.0.to_string(),
                |a, b| a.partition_responses.extend(b.partition_responses),
            );
        }
        out
    }
}

impl PartitionedRequest for ListOffsetsRequest {
    type Response = ListOffsetsResponse;

    fn partitions(&self) -> Vec<(Slot, String, i32)> {
        list_partitions(
            &self.topics,
            |t| t.name.0.to_string(),
            |t| &t.partitions,
            |p| p.partition_index,
        )
    }

    fn subset(&self, slots: &[Slot]) -> Self {
        let mut out = self.clone();
        out.topics = subset_topics(&self.topics, slots, |t| &mut t.partitions);
        out
    }

    fn unreachable(&self) -> ListOffsetsResponse {
        let mut response = ListOffsetsResponse::default();
        response.topics = self
            .topics
            .iter()
            .map(|topic| {
                let mut t = ListOffsetsTopicResponse::default();
                t.name = topic.name.clone();
                t.partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = ListOffsetsPartitionResponse::default();
                        r.partition_index = p.partition_index;
                        r.error_code = ResponseError::NotLeaderOrFollower.code();
                        r.timestamp = -1;
                        r.offset = -1;
                        r.leader_epoch = -1;
                        r
                    })
                    .collect();
                t
            })
            .collect();
        response
    }

    fn merge(&self, parts: Vec<ListOffsetsResponse>) -> ListOffsetsResponse {
        let mut out = ListOffsetsResponse::default();
        for part in parts {
            out.throttle_time_ms = out.throttle_time_ms.max(part.throttle_time_ms);
            merge_topics(
                &mut out.topics,
                part.topics,
                |t| t.name.0.to_string(),
                |a, b| a.partitions.extend(b.partitions),
            );
        }
        out
    }
}

impl PartitionedRequest for FetchRequest {
    type Response = FetchResponse;

    fn partitions(&self) -> Vec<(Slot, String, i32)> {
        list_partitions(
            &self.topics,
            |t| t.topic.0.to_string(),
            |t| &t.partitions,
            |p| p.partition,
        )
    }

    fn subset(&self, slots: &[Slot]) -> Self {
        let mut out = self.clone();
        out.topics = subset_topics(&self.topics, slots, |t| &mut t.partitions);
        // Sessionless: each part is a full fetch of its partitions.
        out.session_id = 0;
        out.session_epoch = -1;
        out.forgotten_topics_data = Vec::new();
        out
    }

    fn unreachable(&self) -> FetchResponse {
        let mut response = FetchResponse::default();
        response.responses = self
            .topics
            .iter()
            .map(|topic| {
                let mut t = FetchableTopicResponse::default();
                t.topic = topic.topic.clone();
                t.topic_id = topic.topic_id;
                t.partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = PartitionData::default();
                        r.partition_index = p.partition;
                        r.error_code = ResponseError::NotLeaderOrFollower.code();
                        r.high_watermark = -1;
                        r.last_stable_offset = -1;
                        r.log_start_offset = -1;
                        r.preferred_read_replica = (-1).into();
                        r.records = Some(Bytes::new());
                        r
                    })
                    .collect();
                t
            })
            .collect();
        response
    }

    /// Keeps the request's `max_bytes`: once the merged records exceed it, later partitions'
    /// records are dropped (their offsets and watermarks stay; the client fetches them next
    /// time). The first partition with records is always kept whole, as Kafka does.
    fn merge(&self, parts: Vec<FetchResponse>) -> FetchResponse {
        let mut out = FetchResponse::default();
        for part in parts {
            out.throttle_time_ms = out.throttle_time_ms.max(part.throttle_time_ms);
            if out.error_code == 0 {
                out.error_code = part.error_code;
            }
            merge_topics(
                &mut out.responses,
                part.responses,
                |t| t.topic.0.to_string(),
                |a, b| a.partitions.extend(b.partitions),
            );
        }
        let limit = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        let mut total = 0usize;
        for p in out
            .responses
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut())
        {
            let len = p.records.as_ref().map_or(0, Bytes::len);
            if len == 0 {
                continue;
            }
            if total > 0 && total + len > limit {
                p.records = Some(Bytes::new());
                continue;
            }
            total += len;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_string()))
    }

    fn produce() -> ProduceRequest {
        let mut r = ProduceRequest::default();
        r.acks = -1;
        r.topic_data = ["a", "b"]
            .iter()
            .map(|t| {
                let mut topic = TopicProduceData::default();
                topic.name = name(t);
                topic.partition_data = (0..3)
                    .map(|i| {
                        let mut p = PartitionProduceData::default();
                        p.index = i;
                        p.records = Some(Bytes::from(format!("{t}{i}")));
                        p
                    })
                    .collect();
                topic
            })
            .collect();
        r
    }

    #[test]
    fn a_subset_keeps_only_its_partitions_and_the_request_settings() {
        let r = produce();
        assert_eq!(r.partitions().len(), 6);
        let part = r.subset(&[(0, 1), (1, 0), (1, 2)]);
        assert_eq!(part.acks, -1);
        let got: Vec<(String, i32, Bytes)> = part
            .topic_data
            .iter()
            .flat_map(|t| {
                t.partition_data
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.index, p.records.clone().unwrap()))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 1, Bytes::from("a1")),
                ("b".into(), 0, Bytes::from("b0")),
                ("b".into(), 2, Bytes::from("b2")),
            ]
        );
    }

    #[test]
    fn merged_answers_cover_every_partition_once() {
        let r = produce();
        let mut first = r.subset(&[(0, 0), (1, 1)]).unreachable();
        first.responses[0].partition_responses[0].error_code = 0;
        let second = r.subset(&[(0, 1), (0, 2), (1, 0), (1, 2)]).unreachable();
        let merged = r.merge(vec![first, second]);
        let mut seen: Vec<(String, i32)> = merged
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.index))
            })
            .collect();
        seen.sort();
        assert_eq!(merged.responses.len(), 2, "one entry per topic");
        assert_eq!(seen.len(), 6);
        seen.dedup();
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn merged_fetches_stay_within_max_bytes_but_keep_the_first_records() {
        let mut request = FetchRequest::default();
        request.max_bytes = 10;
        let mut topic = FetchTopic::default();
        topic.topic = name("t");
        topic.partitions = (0..3)
            .map(|i| {
                let mut p = FetchPartition::default();
                p.partition = i;
                p
            })
            .collect();
        request.topics = vec![topic];
        let part = |index: i32, len: usize| {
            let mut response = request.subset(&[(0, index as usize)]).unreachable();
            let p = &mut response.responses[0].partitions[0];
            p.error_code = 0;
            p.high_watermark = 100;
            p.records = Some(Bytes::from(vec![0u8; len]));
            response
        };
        let merged = request.merge(vec![part(0, 12), part(1, 0), part(2, 5)]);
        let lens: Vec<usize> = merged.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().unwrap().len())
            .collect();
        assert_eq!(
            lens,
            vec![12, 0, 0],
            "the first is kept whole, the rest would exceed"
        );
        assert!(merged.responses[0]
            .partitions
            .iter()
            .all(|p| p.high_watermark == 100));
        let merged = request.merge(vec![part(0, 4), part(2, 5)]);
        let lens: Vec<usize> = merged.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().unwrap().len())
            .collect();
        assert_eq!(lens, vec![4, 5]);
    }
}
