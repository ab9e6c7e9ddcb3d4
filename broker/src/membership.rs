//! This broker as a member of the cluster: registering with the controller at start,
//! heartbeating so it is not fenced, and controlled shutdown at SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::metadata::controller::requests::{ControllerRequest, ControllerResponse};
use crate::metadata::{BrokerInfo, Controller, ControllerError};
use crate::shutdown::stopped;

/// Pause between attempts to reach the controller.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Registers until the controller accepts it, then heartbeats until unfenced. Returns when
/// this broker is registered and unfenced.
pub async fn join(
    controller: &Controller,
    info: BrokerInfo,
    caught_up: impl Fn() -> bool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    let (id, incarnation) = (info.id, info.incarnation);
    let mut registered = false;
    let mut last_log = Instant::now();
    loop {
        let attempt = if !registered {
            controller
                .handle(ControllerRequest::RegisterBroker {
                    broker: info.clone(),
                })
                .await
                .map(|_| {
                    registered = true;
                    false
                })
        } else {
            controller
                .handle(ControllerRequest::Heartbeat {
                    id,
                    incarnation,
                    caught_up: caught_up(),
                })
                .await
                .map(|r| match r {
                    ControllerResponse::Heartbeat { fenced, reregister } => {
                        registered = !reregister;
                        !fenced
                    }
                    _ => false,
                })
        };
        match attempt {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if last_log.elapsed() > Duration::from_secs(5) => {
                tracing::info!(error = %e, "waiting for the controller to accept this broker");
                last_log = Instant::now();
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_BACKOFF) => {}
            _ = stopped(&mut shutdown) => return Err(ControllerError::new(
                kafka_protocol::ResponseError::BrokerNotAvailable, "shut down before joining the cluster")),
        }
    }
}

/// Heartbeats every `broker.heartbeat.interval.ms` until shutdown; registers again when the
/// controller asks (it lost track of this incarnation).
pub async fn heartbeat(
    broker: Arc<Broker>,
    info: BrokerInfo,
    caught_up: Arc<dyn Fn() -> bool + Send + Sync>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(broker.config.broker_heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        let beat = broker
            .controller
            .handle(ControllerRequest::Heartbeat {
                id: info.id,
                incarnation: info.incarnation,
                caught_up: caught_up(),
            })
            .await;
        match beat {
            Ok(ControllerResponse::Heartbeat {
                reregister: true, ..
            }) => {
                let again = broker
                    .controller
                    .handle(ControllerRequest::RegisterBroker {
                        broker: info.clone(),
                    })
                    .await;
                if let Err(e) = again {
                    tracing::warn!(error = %e, "registering again failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

/// Asks the controller to move leadership away from this broker, and waits until this
/// broker's own metadata shows it leads nothing (or the timeout passes).
pub async fn controlled_shutdown(broker: &Broker, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let id = broker.config.node_id;
    while Instant::now() < deadline {
        let asked = broker
            .controller
            .handle(ControllerRequest::ControlledShutdown {
                id,
                incarnation: broker.incarnation,
            })
            .await;
        match asked {
            Ok(ControllerResponse::ShutdownProgress { .. }) => {
                let leading = |b: &Broker| {
                    b.metadata
                        .current()
                        .topics
                        .values()
                        .flat_map(|t| t.partitions.values())
                        .any(|p| p.leader == id)
                };
                // The controller has committed the move; wait for this broker to apply it.
                let mut changes = broker.metadata.subscribe();
                let applied = tokio::time::timeout_at(deadline.into(), async {
                    while leading(broker) {
                        if changes.changed().await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                if applied.is_ok() && !leading(broker) {
                    tracing::info!("controlled shutdown: leadership moved away");
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::info!(error = %e, "controlled shutdown: controller not reachable yet")
            }
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    tracing::warn!("controlled shutdown timed out; stopping anyway");
}
