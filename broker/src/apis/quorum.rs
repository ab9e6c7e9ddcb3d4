//! DescribeQuorum: the metadata quorum's leader, voters and observers, answered by the
//! quorum leader (others say NOT_LEADER_OR_FOLLOWER, and clients retry on the controller).

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::metadata::quorum::QuorumDescription;

/// The metadata log's name as Kafka's KRaft clients know it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Answers from `described` (the quorum as its leader sees it, `None` on other brokers).
pub fn describe(
    request: &DescribeQuorumRequest,
    described: Option<&QuorumDescription>,
) -> DescribeQuorumResponse {
    let mut response = DescribeQuorumResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut topic = TopicData::default();
            topic.topic_name = t.topic_name.clone();
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| partition(&t.topic_name, p.partition_index, described))
                .collect();
            topic
        })
        .collect();
    response
}

fn partition(
    topic: &TopicName,
    index: i32,
    described: Option<&QuorumDescription>,
) -> PartitionData {
    let mut out = PartitionData::default();
    out.partition_index = index;
    if topic.0.as_str() != METADATA_TOPIC || index != 0 {
        out.error_code = ResponseError::UnknownTopicOrPartition.code();
        out.error_message = Some(StrBytes::from_static_str(
            "only __cluster_metadata-0 has a quorum",
        ));
        return out;
    }
    let Some(q) = described else {
        out.error_code = ResponseError::NotLeaderOrFollower.code();
        out.leader_id = BrokerId(-1);
        return out;
    };
    out.leader_id = BrokerId(q.leader);
    out.leader_epoch = i32::try_from(q.term).unwrap_or(i32::MAX);
    out.high_watermark = q.committed;
    let state = |&(id, end): &(i32, i64)| {
        let mut r = ReplicaState::default();
        r.replica_id = BrokerId(id);
        r.log_end_offset = end;
        r
    };
    out.current_voters = q.voters.iter().map(state).collect();
    out.observers = q.observers.iter().map(state).collect();
    out
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_quorum_request;

    use super::*;

    fn request(topic: &str, partition: i32) -> DescribeQuorumRequest {
        let mut p = describe_quorum_request::PartitionData::default();
        p.partition_index = partition;
        let mut t = describe_quorum_request::TopicData::default();
        t.topic_name = TopicName(StrBytes::from_string(topic.into()));
        t.partitions = vec![p];
        let mut r = DescribeQuorumRequest::default();
        r.topics = vec![t];
        r
    }

    #[test]
    fn the_leader_reports_voters_and_observers() {
        let q = QuorumDescription {
            leader: 1,
            term: 7,
            committed: 42,
            voters: vec![(0, 40), (1, 42), (2, -1)],
            observers: vec![(3, 42)],
        };
        let r = describe(&request(METADATA_TOPIC, 0), Some(&q));
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(
            (p.leader_id.0, p.leader_epoch, p.high_watermark),
            (1, 7, 42)
        );
        let voters: Vec<(i32, i64)> = p
            .current_voters
            .iter()
            .map(|v| (v.replica_id.0, v.log_end_offset))
            .collect();
        assert_eq!(voters, q.voters);
        assert_eq!(p.observers[0].replica_id.0, 3);
    }

    #[test]
    fn other_brokers_and_other_partitions_answer_with_errors() {
        let r = describe(&request(METADATA_TOPIC, 0), None);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ResponseError::NotLeaderOrFollower.code()
        );
        let r = describe(&request("orders", 0), None);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
}
