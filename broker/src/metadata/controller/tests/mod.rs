//! The controller front end over a local metadata log: requests, restarts, heartbeats.
//! [`local_log`] and [`store`] are that log, a single-node stand-in for the Raft quorum.

mod local_log;
mod store;

use std::collections::BTreeMap;

use self::local_log::LocalLog;
use super::requests::{ControllerRequest as Req, ControllerResponse as Resp};
use super::*;
use crate::metadata::image::cache::MetadataListener;
use crate::metadata::image::{BrokerInfo, MetadataImage};

struct Nobody;
impl MetadataListener for Nobody {
    fn on_image_loaded(&self, _: &MetadataImage) {}
    fn on_records(&self, _: &MetadataImage, _: &[MetadataRecord]) {}
}

fn controller(dir: &std::path::Path) -> (Controller, Arc<MetadataCache>) {
    let cache = Arc::new(MetadataCache::default());
    let log = LocalLog::open(
        &dir.join("metadata.log"),
        0,
        "h:1".into(),
        cache.clone(),
        Arc::new(Nobody),
    )
    .unwrap();
    let config = Arc::new(BrokerConfig::default());
    (
        Controller::new(config, Arc::new(log), cache.clone(), None),
        cache,
    )
}

fn broker(id: i32, incarnation: u128) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "h".into(),
        port: 1,
        listeners: Vec::new(),
        rack: None,
        http_address: "h:1".into(),
        incarnation: Uuid::from_u128(incarnation),
        fenced: false,
    }
}

async fn register_and_unfence(c: &Controller, id: i32, incarnation: u128) {
    c.handle(Req::RegisterBroker {
        broker: broker(id, incarnation),
    })
    .await
    .unwrap();
    let r = c
        .handle(Req::Heartbeat {
            id,
            incarnation: Uuid::from_u128(incarnation),
            caught_up: true,
        })
        .await
        .unwrap();
    assert!(matches!(
        r,
        Resp::Heartbeat {
            fenced: false,
            reregister: false
        }
    ));
}

fn new_topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
}

#[tokio::test]
async fn topics_and_producer_ids_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first;
    {
        let (c, cache) = controller(dir.path());
        register_and_unfence(&c, 0, 1).await;
        c.handle(Req::CreateTopic {
            topic: new_topic("t", 2, 1),
            validate_only: true,
        })
        .await
        .unwrap();
        assert!(
            cache.current().topic("t").is_none(),
            "validate_only must not create"
        );
        c.handle(Req::CreateTopic {
            topic: new_topic("t", 2, 1),
            validate_only: false,
        })
        .await
        .unwrap();
        let Resp::ProducerIds { first: f, count } = c
            .handle(Req::AllocateProducerIds { count: 1000 })
            .await
            .unwrap()
        else {
            panic!("expected producer ids")
        };
        assert_eq!(count, 1000);
        first = f;
    }
    let (c, cache) = controller(dir.path());
    assert_eq!(cache.current().topic("t").unwrap().partitions.len(), 2);
    let Resp::ProducerIds { first: again, .. } = c
        .handle(Req::AllocateProducerIds { count: 10 })
        .await
        .unwrap()
    else {
        panic!("expected producer ids")
    };
    assert!(again >= first + 1000, "ids never repeat across restarts");
}

#[tokio::test]
async fn heartbeats_unfence_and_a_new_incarnation_must_reregister() {
    let dir = tempfile::tempdir().unwrap();
    let (c, cache) = controller(dir.path());
    c.handle(Req::RegisterBroker {
        broker: broker(1, 7),
    })
    .await
    .unwrap();
    assert!(cache.current().brokers[&1].fenced, "registered fenced");
    let behind = c
        .handle(Req::Heartbeat {
            id: 1,
            incarnation: Uuid::from_u128(7),
            caught_up: false,
        })
        .await
        .unwrap();
    assert!(matches!(behind, Resp::Heartbeat { fenced: true, .. }));
    register_and_unfence(&c, 1, 7).await;
    assert!(!cache.current().brokers[&1].fenced);
    let stale = c
        .handle(Req::Heartbeat {
            id: 1,
            incarnation: Uuid::from_u128(6),
            caught_up: true,
        })
        .await
        .unwrap();
    assert!(matches!(
        stale,
        Resp::Heartbeat {
            reregister: true,
            ..
        }
    ));
    let shut = c
        .handle(Req::ControlledShutdown {
            id: 1,
            incarnation: Uuid::from_u128(7),
        })
        .await
        .unwrap();
    assert!(matches!(shut, Resp::ShutdownProgress { still_leading: 0 }));
    assert!(cache.current().brokers[&1].fenced);
    c.handle(Req::UnregisterBroker { id: 1 }).await.unwrap();
    assert!(!cache.current().brokers.contains_key(&1));
}
