//! Pure decisions of the topic controller: what to change on the cluster so a topic's
//! partitions and configs match its `KafkaTopic` (replicas: `reassign.rs`), which resource
//! owns a topic name, and topic name rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use sluice_client::NewTopic;

use crate::crd::KafkaTopic;
use crate::kafka::TopicState;

/// What a `KafkaTopic` asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    /// Kafka topic name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
    /// Topic configs.
    pub configs: BTreeMap<String, String>,
}

/// Whether `name` is a legal Kafka topic name.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Check a `KafkaTopic` (the API server's CEL rules cover most of this; the operator does
/// not rely on them having existed when the resource was written).
pub fn desired_topic(kt: &KafkaTopic) -> Result<DesiredTopic, String> {
    let name = kt.topic_name();
    let mut problems = Vec::new();
    if !valid_topic_name(&name) {
        problems.push(format!(
            "topic name `{name}` is not a valid Kafka topic name (1-249 of ASCII letters, \
             digits, '.', '_', '-'; not '.' or '..')"
        ));
    }
    if kt.spec.partitions < 1 {
        problems.push(format!(
            "spec.partitions must be >= 1, got {}",
            kt.spec.partitions
        ));
    }
    let rf = i16::try_from(kt.spec.replicas).ok().filter(|r| *r >= 1);
    if rf.is_none() {
        problems.push(format!(
            "spec.replicas must be between 1 and 32767, got {}",
            kt.spec.replicas
        ));
    }
    if kt.spec.cluster.is_empty() {
        problems.push("spec.cluster is empty".to_string());
    }
    match rf {
        Some(replication_factor) if problems.is_empty() => Ok(DesiredTopic {
            name,
            partitions: kt.spec.partitions,
            replication_factor,
            configs: kt.spec.config.clone(),
        }),
        _ => Err(problems.join("; ")),
    }
}

/// Changes that bring an existing topic in line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicChanges {
    /// Grow to this many partitions.
    pub grow_to: Option<i32>,
    /// Configs to set (missing or different on the topic).
    pub set_configs: Vec<(String, String)>,
    /// Configs set on the topic but not in the spec: removed, back to the broker default.
    pub delete_configs: Vec<String>,
    /// The topic has more partitions than the spec (they cannot be removed).
    pub partitions_above_spec: Option<i32>,
}

/// What to do with a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPlan {
    /// It does not exist: create it.
    Create(NewTopic),
    /// It exists: change what differs (possibly nothing).
    Update(TopicChanges),
}

/// Compare `desired` with what the cluster has.
pub fn plan_topic(desired: &DesiredTopic, observed: Option<&TopicState>) -> TopicPlan {
    let Some(state) = observed else {
        return TopicPlan::Create(NewTopic {
            name: desired.name.clone(),
            partitions: desired.partitions,
            replication_factor: desired.replication_factor,
            configs: desired
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
    };
    let have = state.partitions();
    TopicPlan::Update(TopicChanges {
        grow_to: (desired.partitions > have).then_some(desired.partitions),
        set_configs: desired
            .configs
            .iter()
            .filter(|(k, v)| state.configs.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        delete_configs: state
            .configs
            .keys()
            .filter(|k| !desired.configs.contains_key(*k))
            .cloned()
            .collect(),
        partitions_above_spec: (have > desired.partitions).then_some(have),
    })
}

/// Order of claims on a topic name: the earliest-created resource owns it; the name breaks
/// ties between resources created in the same second.
fn claim_key(kt: &KafkaTopic) -> (Option<i64>, String) {
    (
        kt.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        kt.name_any(),
    )
}

/// The `KafkaTopic` that owns the topic `me` names, when it is not `me`: another resource
/// in the same namespace, for the same cluster and topic name, created earlier.
pub fn owner_other_than<'a>(me: &KafkaTopic, all: &'a [Arc<KafkaTopic>]) -> Option<&'a KafkaTopic> {
    let topic = me.topic_name();
    let namespace = me.namespace();
    let mine = claim_key(me);
    all.iter()
        .map(Arc::as_ref)
        .filter(|other| {
            other.namespace() == namespace
                && other.name_any() != me.name_any()
                && other.spec.cluster == me.spec.cluster
                && other.topic_name() == topic
        })
        .filter(|other| {
            // Resources without a creation time (never stored) do not claim anything.
            let key = claim_key(other);
            key.0.is_some() && (mine.0.is_none() || key < mine)
        })
        .min_by_key(|other| claim_key(other))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;

    fn state(partitions: &[&[i32]], configs: &[(&str, &str)]) -> TopicState {
        TopicState {
            topic_id: uuid::Uuid::nil(),
            assignment: partitions
                .iter()
                .enumerate()
                .map(|(i, r)| (i as i32, r.to_vec()))
                .collect(),
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn desired(partitions: i32, rf: i16, configs: &[(&str, &str)]) -> DesiredTopic {
        DesiredTopic {
            name: "orders".into(),
            partitions,
            replication_factor: rf,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn missing_topic_is_created_with_configs() {
        let plan = plan_topic(&desired(6, 3, &[("retention.ms", "1000")]), None);
        assert_eq!(
            plan,
            TopicPlan::Create(NewTopic::new("orders", 6, 3).config("retention.ms", "1000"))
        );
    }

    #[test]
    fn matching_topic_needs_nothing() {
        let s = state(&[&[0, 1], &[1, 2]], &[("retention.ms", "1000")]);
        assert_eq!(
            plan_topic(&desired(2, 2, &[("retention.ms", "1000")]), Some(&s)),
            TopicPlan::Update(TopicChanges::default())
        );
    }

    #[test]
    fn grows_and_repairs_configs() {
        let s = state(
            &[&[0], &[0]],
            &[("retention.ms", "5"), ("segment.bytes", "1024")],
        );
        let plan = plan_topic(
            &desired(
                4,
                1,
                &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
            ),
            Some(&s),
        );
        assert_eq!(
            plan,
            TopicPlan::Update(TopicChanges {
                grow_to: Some(4),
                set_configs: vec![
                    ("cleanup.policy".into(), "compact".into()),
                    ("retention.ms".into(), "1000".into())
                ],
                delete_configs: vec!["segment.bytes".into()],
                partitions_above_spec: None,
            })
        );
    }

    #[test]
    fn never_shrinks_partitions() {
        let s = state(&[&[0], &[1], &[2]], &[]);
        let TopicPlan::Update(changes) = plan_topic(&desired(2, 3, &[]), Some(&s)) else {
            panic!("expected an update");
        };
        assert_eq!(changes.grow_to, None);
        assert_eq!(changes.partitions_above_spec, Some(3));
    }

    #[test]
    fn topic_names() {
        for ok in ["orders", "a.b_c-D", "x", &"y".repeat(249)] {
            assert!(valid_topic_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", &"y".repeat(250), "é"] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    fn kt(name: &str, topic: Option<&str>, created: Option<i64>) -> Arc<KafkaTopic> {
        let mut t: KafkaTopic = serde_json::from_value(json!({
            "apiVersion": "kafka.sluice.dev/v1alpha1",
            "kind": "KafkaTopic",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"cluster": "demo", "topicName": topic, "partitions": 1, "replicas": 1},
        }))
        .expect("KafkaTopic");
        t.metadata.creation_timestamp =
            created.map(|s| Time(Timestamp::from_second(s).expect("timestamp")));
        Arc::new(t)
    }

    #[test]
    fn desired_topic_checks_the_spec() {
        let t = kt("orders", None, Some(1));
        let d = desired_topic(&t).expect("valid");
        assert_eq!(d.name, "orders");
        let mut bad = (*kt("x", Some("a b"), Some(1))).clone();
        bad.spec.partitions = 0;
        bad.spec.replicas = 40000;
        let err = desired_topic(&bad).unwrap_err();
        assert!(
            err.contains("`a b` is not a valid Kafka topic name"),
            "{err}"
        );
        assert!(err.contains("spec.partitions must be >= 1, got 0"), "{err}");
        assert!(err.contains("between 1 and 32767, got 40000"), "{err}");
    }

    #[test]
    fn earliest_claim_owns_the_topic() {
        let first = kt("first", Some("orders"), Some(100));
        let second = kt("second", Some("orders"), Some(200));
        let by_name = kt("orders", None, Some(300));
        let other_topic = kt("other", Some("payments"), Some(50));
        let all = vec![first.clone(), second.clone(), by_name.clone(), other_topic];
        assert_eq!(owner_other_than(&first, &all), None);
        assert_eq!(
            owner_other_than(&second, &all).map(|t| t.name_any()),
            Some("first".into())
        );
        assert_eq!(
            owner_other_than(&by_name, &all).map(|t| t.name_any()),
            Some("first".into()),
            "metadata.name counts as the topic name"
        );
        // Same second: the name decides, so exactly one of them owns it.
        let a = kt("a", Some("t"), Some(5));
        let b = kt("b", Some("t"), Some(5));
        let pair = vec![a.clone(), b.clone()];
        assert_eq!(owner_other_than(&a, &pair), None);
        assert_eq!(
            owner_other_than(&b, &pair).map(|t| t.name_any()),
            Some("a".into())
        );
        // Another cluster's topic of the same name is unrelated.
        let mut elsewhere = (*kt("z", Some("t"), Some(1))).clone();
        elsewhere.spec.cluster = "other".into();
        assert_eq!(owner_other_than(&b, &[Arc::new(elsewhere)]), None);
    }
}
