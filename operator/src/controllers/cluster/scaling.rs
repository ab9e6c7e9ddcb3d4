//! The scaling workflows of a `KafkaCluster` as a pure state machine.
//!
//! Scale-up: grow the StatefulSet, wait for the new brokers, then move replicas and
//! preferred leaders onto them until the load is balanced. Scale-down: move every replica
//! off the brokers being removed, then shrink the StatefulSet, wait for the pods to go, and
//! unregister the brokers. Each reconcile calls [`plan`] with what it observed and the
//! operation recorded in `.status.operation`, and carries out what comes back; the brokers
//! hold the running reassignments, so an operator restart resumes where the cluster is.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use crate::crd::Operation;
use crate::placement::{self, Layout, ObservedLayout};

/// `operation.kind` of a scale-up.
pub const SCALE_UP: &str = "ScaleUp";
/// `operation.kind` of a scale-down.
pub const SCALE_DOWN: &str = "ScaleDown";

/// Scale-up: the StatefulSet grew; waiting for every broker to register.
pub const ADDING_BROKERS: &str = "AddingBrokers";
/// Scale-up: replicas and leaders move onto the new brokers.
pub const REBALANCING: &str = "Rebalancing";
/// Scale-down: the metadata is needed to know what the removed brokers hold.
pub const WAITING_FOR_METADATA: &str = "WaitingForMetadata";
/// Scale-down: refused, the remaining brokers cannot hold every topic.
pub const REFUSED: &str = "Refused";
/// Scale-down: replicas move off the brokers being removed.
pub const DRAINING: &str = "Draining";
/// Scale-down: drained, but removing the brokers now would take a majority of the metadata
/// quorum's voters with them; waiting for the quorum to move its voters to lower ids.
pub const MOVING_VOTERS: &str = "MovingVoters";
/// Scale-down: the StatefulSet shrank; waiting for the pods to stop.
pub const REMOVING_BROKERS: &str = "RemovingBrokers";
/// Scale-down: the stopped brokers are unregistered from the cluster.
pub const UNREGISTERING: &str = "Unregistering";

/// What a reconcile observed, for [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct ScalingInput<'a> {
    /// `spec.replicas`.
    pub desired: i32,
    /// The StatefulSet's `spec.replicas` (`None`: not created yet).
    pub running: Option<i32>,
    /// The cluster's partitions and brokers, when they could be read.
    pub cluster: Option<&'a ObservedLayout>,
    /// Ordinals of the broker pods that exist.
    pub pods: &'a BTreeSet<i32>,
    /// The operation recorded in the status.
    pub previous: Option<&'a Operation>,
    /// Most partitions moving at once, counting moves already running (the throttle).
    pub max_moves: usize,
    /// Now, for a new operation's start time.
    pub now: Timestamp,
}

/// What to do in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingPlan {
    /// Replicas to apply to the StatefulSet.
    pub statefulset_replicas: i32,
    /// Reassignments to start now (partition -> target replica list).
    pub start_moves: Layout,
    /// Brokers to unregister now.
    pub unregister: Vec<i32>,
    /// The operation to record (`None`: nothing runs).
    pub operation: Option<Operation>,
    /// Why a scale-down is refused, for the Degraded condition.
    pub refused: Option<String>,
    /// Partitions still to move (started or not) for the operation.
    pub pending_moves: usize,
}

impl ScalingPlan {
    fn settled(replicas: i32) -> Self {
        ScalingPlan {
            statefulset_replicas: replicas,
            start_moves: Layout::new(),
            unregister: Vec::new(),
            operation: None,
            refused: None,
            pending_moves: 0,
        }
    }
}

/// Decide the next step of whatever scaling the spec and the recorded operation call for.
pub fn plan(input: &ScalingInput<'_>) -> ScalingPlan {
    let desired = input.desired;
    let Some(running) = input.running else {
        return ScalingPlan::settled(desired);
    };
    if desired == 0 {
        // Stopping the whole cluster: the volumes keep the data, nothing to move.
        return ScalingPlan::settled(0);
    }
    if desired < running {
        return scale_down(input, running);
    }
    if desired > running {
        let mut plan = ScalingPlan::settled(desired);
        plan.operation = Some(with_text(
            operation(input, SCALE_UP, ADDING_BROKERS, running, desired),
            format!("{running} -> {desired} brokers"),
            format!("starting {}", range(running, desired)),
        ));
        return plan;
    }
    match input.previous {
        Some(op) if op.kind == SCALE_DOWN && op.to_replicas == Some(desired) => {
            let from = op.from_replicas.unwrap_or(desired);
            if from > desired && matches!(op.phase.as_str(), REMOVING_BROKERS | UNREGISTERING) {
                return remove_brokers(input, from);
            }
            // Refused or still draining and the spec went back: the scale-down is off.
            ScalingPlan::settled(desired)
        }
        Some(op) if op.kind == SCALE_UP && op.to_replicas == Some(desired) => {
            rebalance(input, op.from_replicas.unwrap_or(desired))
        }
        _ => match input.cluster {
            // A broker holding nothing (e.g. the operator stopped between growing the
            // StatefulSet and recording the operation) gets its share too.
            Some(view) if has_empty_broker(view, desired) => rebalance(input, desired),
            _ => ScalingPlan::settled(desired),
        },
    }
}

fn has_empty_broker(view: &ObservedLayout, brokers: i32) -> bool {
    let total: usize = view.replicas.values().map(Vec::len).sum();
    let all_live = (0..brokers).all(|b| view.live.contains_key(&b));
    let load = placement::load(&view.settled_layout(), &view.target_brokers(brokers));
    all_live
        && total >= usize::try_from(brokers).unwrap_or(0)
        && load.replicas.values().any(|&c| c == 0)
}

fn operation(input: &ScalingInput<'_>, kind: &str, phase: &str, from: i32, to: i32) -> Operation {
    // The same operation keeps its start time and starting count across phases.
    let same = input
        .previous
        .filter(|o| o.kind == kind && o.to_replicas == Some(to));
    let started = same
        .and_then(|o| o.started.clone())
        .unwrap_or_else(|| input.now.to_string());
    let from = same.and_then(|o| o.from_replicas).unwrap_or(from);
    Operation {
        kind: kind.into(),
        phase: phase.into(),
        started: Some(started),
        progress: None,
        message: None,
        from_replicas: Some(from),
        to_replicas: Some(to),
    }
}

fn with_text(mut op: Operation, progress: String, message: String) -> Operation {
    op.progress = Some(progress);
    op.message = Some(message);
    op
}

fn range(from: i32, to: i32) -> String {
    if from + 1 == to {
        format!("broker {from}")
    } else {
        format!("brokers {from}..{}", to - 1)
    }
}

/// Up to the throttle's free slots of `wanted` moves, skipping partitions already moving.
fn next_moves(wanted: &Layout, view: &ObservedLayout, max_moves: usize) -> Layout {
    let free = max_moves.max(1).saturating_sub(view.moving.len());
    wanted
        .iter()
        .filter(|(k, _)| !view.moving.contains_key(*k))
        .take(free)
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect()
}

fn scale_down(input: &ScalingInput<'_>, running: i32) -> ScalingPlan {
    let desired = input.desired;
    let mut plan = ScalingPlan::settled(running);
    let op = operation(input, SCALE_DOWN, DRAINING, running, desired);
    let removed = range(desired, running);
    let Some(view) = input.cluster else {
        plan.operation = Some(with_text(
            Operation {
                phase: WAITING_FOR_METADATA.into(),
                ..op
            },
            format!("{running} -> {desired} brokers"),
            format!(
                "the cluster metadata cannot be read to see what {removed} hold; \
                 nothing is removed until it can"
            ),
        ));
        return plan;
    };
    let settled = view.settled_layout();
    let target = match placement::balance(&settled, &view.target_brokers(desired)) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("scale-down from {running} to {desired} brokers refused: {e}");
            plan.refused = Some(message.clone());
            plan.operation = Some(with_text(
                Operation {
                    phase: REFUSED.into(),
                    ..op
                },
                format!("{running} -> {desired} brokers"),
                message,
            ));
            return plan;
        }
    };
    // Only partitions touching the removed brokers move: a drain, not a full rebalance.
    let drain: Layout = placement::moves(&settled, &target)
        .into_iter()
        .filter(|(k, _)| settled[k].iter().any(|&b| b >= desired))
        .collect();
    let remaining = view.partitions_on_removed(desired);
    if remaining == 0 {
        let Some(keep) = view
            .voters
            .as_ref()
            .and_then(|v| quorum_safe_count(running, desired, v, &view.live))
        else {
            plan.operation = Some(with_text(
                Operation {
                    phase: MOVING_VOTERS.into(),
                    ..op
                },
                format!("{running} -> {desired} brokers"),
                format!(
                    "{removed} hold no replicas, but removing them now would leave the metadata \
                     quorum without a majority of its voters (voters: {}); waiting for the \
                     quorum to move its voters to lower broker ids",
                    describe_voters(view.voters.as_ref())
                ),
            ));
            return plan;
        };
        plan.statefulset_replicas = keep;
        let stopping = range(keep, running);
        plan.operation = Some(with_text(
            Operation {
                phase: REMOVING_BROKERS.into(),
                ..op
            },
            format!("{running} -> {desired} brokers"),
            if keep == desired {
                format!("{removed} hold no replicas; stopping them")
            } else {
                format!(
                    "{removed} hold no replicas; stopping {stopping} first, as many as the \
                     metadata quorum's voters allow at once"
                )
            },
        ));
        return plan;
    }
    plan.start_moves = next_moves(&drain, view, input.max_moves);
    plan.pending_moves = remaining;
    plan.operation = Some(with_text(
        op,
        format!(
            "{remaining} partitions still on {removed}, {} moving",
            view.moving.len() + plan.start_moves.len()
        ),
        format!("moving every replica off {removed} before they are removed"),
    ));
    plan
}

/// The fewest brokers (`>= desired`, `< running`) the StatefulSet can shrink to now with a
/// majority of the quorum's voters live on the brokers that stay, or `None` if not even
/// one broker can go yet.
fn quorum_safe_count(
    running: i32,
    desired: i32,
    voters: &BTreeSet<i32>,
    live: &BTreeMap<i32, Option<String>>,
) -> Option<i32> {
    let majority = voters.len() / 2 + 1;
    (desired..running).find(|&keep| {
        voters
            .iter()
            .filter(|v| **v < keep && live.contains_key(v))
            .count()
            >= majority
    })
}

fn describe_voters(voters: Option<&BTreeSet<i32>>) -> String {
    match voters {
        Some(v) => v.iter().map(i32::to_string).collect::<Vec<_>>().join(", "),
        None => "unknown: DescribeQuorum did not answer".into(),
    }
}

fn remove_brokers(input: &ScalingInput<'_>, from: i32) -> ScalingPlan {
    let desired = input.desired;
    let mut plan = ScalingPlan::settled(desired);
    let removed = range(desired, from);
    let op = operation(input, SCALE_DOWN, REMOVING_BROKERS, from, desired);
    let still_running: Vec<String> = input
        .pods
        .iter()
        .filter(|&&p| p >= desired)
        .map(i32::to_string)
        .collect();
    if !still_running.is_empty() {
        plan.operation = Some(with_text(
            op,
            format!("{from} -> {desired} brokers"),
            format!(
                "waiting for the pods of broker(s) {} to stop",
                still_running.join(", ")
            ),
        ));
        return plan;
    }
    plan.unregister = (desired..from).collect();
    plan.operation = Some(with_text(
        Operation {
            phase: UNREGISTERING.into(),
            ..op
        },
        format!("{from} -> {desired} brokers"),
        format!("unregistering {removed} from the cluster"),
    ));
    plan
}

fn rebalance(input: &ScalingInput<'_>, from: i32) -> ScalingPlan {
    let desired = input.desired;
    let mut plan = ScalingPlan::settled(desired);
    let op = operation(input, SCALE_UP, REBALANCING, from, desired);
    let Some(view) = input.cluster else {
        plan.operation = Some(with_text(
            Operation {
                phase: ADDING_BROKERS.into(),
                ..op
            },
            format!("{from} -> {desired} brokers"),
            "waiting for the cluster metadata".into(),
        ));
        return plan;
    };
    let missing: Vec<String> = (0..desired)
        .filter(|b| !view.live.contains_key(b))
        .map(|b| b.to_string())
        .collect();
    if !missing.is_empty() {
        plan.operation = Some(with_text(
            Operation {
                phase: ADDING_BROKERS.into(),
                ..op
            },
            format!("{from} -> {desired} brokers"),
            format!("waiting for broker(s) {} to join", missing.join(", ")),
        ));
        return plan;
    }
    let settled = view.settled_layout();
    let brokers = view.target_brokers(desired);
    let wanted = match placement::balance(&settled, &brokers) {
        Ok(target) => placement::moves(&settled, &target),
        // Cannot happen when growing; nothing sensible to move if it does.
        Err(_) => Layout::new(),
    };
    if wanted.is_empty() && view.moving.is_empty() {
        return plan;
    }
    plan.start_moves = next_moves(&wanted, view, input.max_moves);
    plan.pending_moves = wanted.len().max(view.moving.len());
    let load = placement::load(&settled, &brokers);
    let shares = load
        .replicas
        .iter()
        .map(|(b, c)| format!("{b}:{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    plan.operation = Some(with_text(
        op,
        format!(
            "{} partitions to move, {} moving",
            wanted.len(),
            view.moving.len() + plan.start_moves.len()
        ),
        format!("moving replicas and leaders onto the new brokers (replicas per broker: {shares})"),
    ));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("valid")
    }

    /// `count` partitions of `t` round-robin over brokers `0..n` with `rf` replicas.
    fn view(n: i32, live: i32, parts: &[(&str, i32, i32)]) -> ObservedLayout {
        let mut replicas = Layout::new();
        for &(t, count, rf) in parts {
            for p in 0..count {
                replicas.insert((t.to_string(), p), (0..rf).map(|r| (p + r) % n).collect());
            }
        }
        ObservedLayout {
            replicas,
            moving: BTreeMap::new(),
            live: (0..live).map(|b| (b, None)).collect(),
            voters: Some((0..n.min(3)).collect()),
        }
    }

    fn input<'a>(
        desired: i32,
        running: i32,
        cluster: Option<&'a ObservedLayout>,
        pods: &'a BTreeSet<i32>,
        previous: Option<&'a Operation>,
    ) -> ScalingInput<'a> {
        ScalingInput {
            desired,
            running: Some(running),
            cluster,
            pods,
            previous,
            max_moves: 4,
            now: now(),
        }
    }

    fn pods(n: i32) -> BTreeSet<i32> {
        (0..n).collect()
    }

    /// Applies started moves to the view as if the brokers finished them at once.
    fn complete(view: &mut ObservedLayout, moves: &Layout) {
        for (k, r) in moves {
            view.replicas.insert(k.clone(), r.clone());
        }
    }

    #[test]
    fn a_settled_cluster_does_nothing() {
        let v = view(3, 3, &[("t", 6, 3)]);
        let p = plan(&input(3, 3, Some(&v), &pods(3), None));
        assert_eq!(p, ScalingPlan::settled(3));
    }

    #[test]
    fn scale_up_grows_then_rebalances_until_balanced_within_the_throttle() {
        let mut v = view(3, 3, &[("t", 6, 3), ("__consumer_offsets", 10, 3)]);
        let p = plan(&input(5, 3, Some(&v), &pods(3), None));
        assert_eq!(p.statefulset_replicas, 5);
        let op = p.operation.expect("scale-up recorded");
        assert_eq!(
            (op.kind.as_str(), op.phase.as_str()),
            (SCALE_UP, ADDING_BROKERS)
        );
        assert_eq!((op.from_replicas, op.to_replicas), (Some(3), Some(5)));

        // Broker 4 has not joined yet: wait.
        v.live.insert(3, None);
        let p = plan(&input(5, 5, Some(&v), &pods(5), Some(&op)));
        assert!(p.start_moves.is_empty());
        assert_eq!(p.operation.as_ref().unwrap().phase, ADDING_BROKERS);
        v.live.insert(4, None);

        let mut op = op;
        let mut rounds = 0;
        loop {
            let p = plan(&input(5, 5, Some(&v), &pods(5), Some(&op)));
            assert_eq!(p.statefulset_replicas, 5);
            let Some(next) = p.operation else { break };
            assert_eq!(next.phase, REBALANCING);
            assert_eq!(next.started, op.started, "the start time is kept");
            assert!(p.start_moves.len() <= 4, "throttled");
            assert!(!p.start_moves.is_empty());
            complete(&mut v, &p.start_moves);
            op = next;
            rounds += 1;
            assert!(rounds < 50, "converges");
        }
        let load = placement::load(&v.replicas, &v.target_brokers(5));
        assert!(load.is_balanced(), "{load:?}");
    }

    #[test]
    fn running_moves_use_up_the_throttle() {
        let mut v = view(3, 5, &[("t", 12, 3)]);
        let first = plan(&input(5, 5, Some(&v), &pods(5), None));
        assert_eq!(
            first.start_moves.len(),
            4,
            "an empty broker triggers a rebalance"
        );
        let op = first.operation.expect("recorded");
        v.moving = first.start_moves;
        let p = plan(&input(5, 5, Some(&v), &pods(5), Some(&op)));
        assert!(p.start_moves.is_empty(), "four already moving");
        assert_eq!(p.operation.unwrap().phase, REBALANCING);
    }

    #[test]
    fn scale_down_drains_then_shrinks_then_unregisters() {
        let mut v = view(5, 5, &[("t", 10, 3)]);
        let mut op: Option<Operation> = None;
        let mut rounds = 0;
        let shrink = loop {
            let p = plan(&input(3, 5, Some(&v), &pods(5), op.as_ref()));
            let next = p.operation.clone().expect("scale-down recorded");
            assert_eq!(next.kind, SCALE_DOWN);
            assert_eq!((next.from_replicas, next.to_replicas), (Some(5), Some(3)));
            if next.phase == REMOVING_BROKERS {
                break p;
            }
            assert_eq!(next.phase, DRAINING);
            assert_eq!(p.statefulset_replicas, 5, "nothing removed while draining");
            for r in p.start_moves.values() {
                assert!(r.iter().all(|&b| b < 3), "moves only onto staying brokers");
            }
            complete(&mut v, &p.start_moves);
            op = Some(next);
            rounds += 1;
            assert!(rounds < 20, "converges");
        };
        assert_eq!(shrink.statefulset_replicas, 3);
        assert!(v.replicas.values().all(|r| r.iter().all(|&b| b < 3)));
        let op = shrink.operation.unwrap();

        // The StatefulSet shrank; its pods are still stopping.
        let p = plan(&input(3, 3, Some(&v), &pods(5), Some(&op)));
        assert_eq!(p.operation.as_ref().unwrap().phase, REMOVING_BROKERS);
        assert!(p.unregister.is_empty());
        let p = plan(&input(3, 3, Some(&v), &pods(3), Some(&op)));
        assert_eq!(p.unregister, vec![3, 4]);
        assert_eq!(p.operation.as_ref().unwrap().phase, UNREGISTERING);
        assert_eq!(p.statefulset_replicas, 3);
    }

    #[test]
    fn a_drain_waits_for_running_moves_off_the_removed_brokers() {
        let mut v = view(3, 3, &[("t", 3, 2)]);
        // Partition 0 is moving from [3, 0] to [1, 0]: broker 3 still holds it.
        v.replicas.insert(("t".into(), 0), vec![1, 0, 3]);
        v.moving.insert(("t".into(), 0), vec![1, 0]);
        v.live.insert(3, None);
        let p = plan(&input(3, 4, Some(&v), &pods(4), None));
        assert_eq!(p.statefulset_replicas, 4, "the old replica is not gone yet");
        assert_eq!(p.operation.unwrap().phase, DRAINING);
        assert!(p.start_moves.is_empty(), "nothing else to move");
    }

    #[test]
    fn a_scale_down_below_a_replication_factor_is_refused_and_changes_nothing() {
        let v = view(3, 3, &[("orders", 3, 3)]);
        let p = plan(&input(2, 3, Some(&v), &pods(3), None));
        assert_eq!(p.statefulset_replicas, 3);
        assert!(p.start_moves.is_empty());
        let message = p.refused.expect("refused");
        assert!(message.contains("orders") && message.contains("replication factor 3"));
        assert_eq!(p.operation.unwrap().phase, REFUSED);
        // The spec goes back: the refusal is cleared.
        let refused = plan(&input(2, 3, Some(&v), &pods(3), None))
            .operation
            .unwrap();
        assert_eq!(
            plan(&input(3, 3, Some(&v), &pods(3), Some(&refused))),
            ScalingPlan::settled(3)
        );
    }

    #[test]
    fn brokers_go_only_as_fast_as_the_quorum_keeps_a_majority() {
        let mut v = view(5, 5, &[("t", 3, 2)]);
        for r in v.replicas.values_mut() {
            r.retain(|&b| b < 2);
            if r.len() < 2 {
                *r = vec![0, 1];
            }
        }
        // Voters on 2, 3 and 4: removing 3 and 4 together would leave one of three.
        v.voters = Some([2, 3, 4].into_iter().collect());
        let p = plan(&input(2, 5, Some(&v), &pods(5), None));
        assert_eq!(p.statefulset_replicas, 4, "one voter at a time");
        assert_eq!(p.operation.as_ref().unwrap().phase, REMOVING_BROKERS);
        // Broker 4 gone (not live); voter 4 not replaced yet: nothing more can go.
        v.live.remove(&4);
        let op = p.operation.unwrap();
        let p = plan(&input(2, 4, Some(&v), &pods(4), Some(&op)));
        assert_eq!(p.statefulset_replicas, 4);
        assert_eq!(p.operation.as_ref().unwrap().phase, MOVING_VOTERS);
        // The quorum moved its voters down: the rest can go at once.
        v.voters = Some([0, 1, 2].into_iter().collect());
        let p = plan(&input(2, 4, Some(&v), &pods(4), Some(&op)));
        assert_eq!(p.statefulset_replicas, 2);
        let op = p.operation.unwrap();
        assert_eq!((op.from_replicas, op.to_replicas), (Some(5), Some(2)));
        // Unknown voters: nothing is removed.
        v.voters = None;
        let p = plan(&input(2, 4, Some(&v), &pods(4), Some(&op)));
        assert_eq!(p.statefulset_replicas, 4);
    }

    #[test]
    fn without_metadata_a_scale_down_waits() {
        let p = plan(&input(2, 3, None, &pods(3), None));
        assert_eq!(p.statefulset_replicas, 3);
        assert_eq!(p.operation.unwrap().phase, WAITING_FOR_METADATA);
    }

    #[test]
    fn scaling_to_zero_or_creating_applies_directly() {
        let v = view(3, 3, &[("t", 3, 3)]);
        assert_eq!(
            plan(&input(0, 3, Some(&v), &pods(3), None)),
            ScalingPlan::settled(0)
        );
        let none = BTreeSet::new();
        let mut i = input(3, 3, None, &none, None);
        i.running = None;
        assert_eq!(plan(&i), ScalingPlan::settled(3));
    }

    #[test]
    fn a_drain_resumes_from_the_recorded_operation_after_the_statefulset_shrank() {
        // The operator stopped after shrinking the StatefulSet, before writing the phase.
        let v = view(3, 3, &[("t", 3, 3)]);
        let mut op = plan(&input(
            2,
            3,
            Some(&view(3, 3, &[("t", 3, 2)])),
            &pods(3),
            None,
        ))
        .operation
        .unwrap();
        op.phase = REMOVING_BROKERS.into();
        let p = plan(&input(2, 2, Some(&v), &pods(2), Some(&op)));
        assert_eq!(p.unregister, vec![2]);
        // A drain cancelled by raising the spec back leaves nothing recorded.
        op.phase = DRAINING.into();
        assert_eq!(
            plan(&input(3, 3, Some(&v), &pods(3), Some(&op))).operation,
            None
        );
    }
}
