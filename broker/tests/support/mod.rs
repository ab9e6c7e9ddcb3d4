//! Test support: a real broker in this process, on free ports and a temp dir, and the record
//! batch builder the unit tests use too.

#![allow(dead_code)] // each test binary uses a different part

use sluice_broker::config::BrokerConfig;
use sluice_broker::server::{self, RunningBroker};

/// The record-batch builder the unit tests use, compiled into this test binary.
#[path = "../../src/test_support.rs"]
pub mod test_support;

pub struct TestBroker {
    pub running: RunningBroker,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            http_listener: "127.0.0.1:0".parse().unwrap(),
            // Tests register pretend peers that never heartbeat; they must not be fenced.
            broker_session_timeout: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        config
            .set("listeners", "127.0.0.1:0")
            .expect("a valid listener");
        configure(&mut config);
        let running = server::start(config).await.expect("broker starts");
        TestBroker { running, dir }
    }

    /// Clean shutdown and start again on the same data directory (new free ports).
    pub async fn restart(self) -> TestBroker {
        let TestBroker { running, dir } = self;
        let mut config = running.broker.config.as_ref().clone();
        running.shutdown().await;
        config
            .set("listeners", "127.0.0.1:0")
            .expect("a valid listener");
        config.http_listener = "127.0.0.1:0".parse().unwrap();
        let running = server::start(config).await.expect("broker restarts");
        TestBroker { running, dir }
    }

    pub fn addr(&self) -> String {
        self.running.kafka_addr.to_string()
    }

    pub async fn client(&self) -> sluice_client::Client {
        sluice_client::Client::connect(&[self.addr()])
            .await
            .expect("client connects")
    }
}
