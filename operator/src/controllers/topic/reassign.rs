//! Replication-factor changes as a workflow whose state lives in the cluster (pure).
//!
//! The brokers hold a running partition reassignment, so every reconcile decides afresh from
//! what the cluster reports: the topic's replica lists, the reassignments in progress and the
//! live brokers. An operator restart therefore resumes where the cluster is.

use std::collections::BTreeMap;

use crate::placement::moves;
use crate::placement::replication_factor::{target_assignment, PlacementError};

/// `status.operation.kind` of a replication-factor change.
pub const KIND: &str = "ReplicaChange";
/// `status.operation.phase` while replicas move.
pub const PHASE_MOVING: &str = "Moving";
/// `status.operation.phase` while the change cannot start (too few live brokers).
pub const PHASE_BLOCKED: &str = "Blocked";

/// How far a move is, counted over all partitions of the topic (a count that survives an
/// operator restart: the cluster does not remember which partitions a move started with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveProgress {
    /// Partitions with the target replica count and no reassignment running.
    pub done: usize,
    /// Partitions of the topic.
    pub total: usize,
}

impl std::fmt::Display for MoveProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} partitions done", self.done, self.total)
    }
}

/// What to do about a topic's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAction {
    /// Every partition has the wanted replica count and nothing is moving.
    InSync,
    /// A reassignment of the topic is running: send nothing, report progress.
    Wait(MoveProgress),
    /// Send these targets (only the partitions whose replicas change).
    Start {
        /// Current replication factor (the largest replica set).
        from: i32,
        /// Wanted replication factor.
        to: i32,
        /// New replica list by partition.
        moves: BTreeMap<i32, Vec<i32>>,
        /// Progress once these moves are under way.
        progress: MoveProgress,
    },
    /// Fewer live brokers than the wanted replica count: send nothing.
    NotEnoughBrokers {
        /// Current replication factor.
        from: i32,
        /// Wanted replication factor.
        to: i32,
        /// Live brokers.
        live: usize,
    },
}

fn count(replicas: &[i32]) -> i32 {
    i32::try_from(replicas.len()).unwrap_or(i32::MAX)
}

/// Whether a move would have to start: nothing is running and some partition's replica
/// count differs from `want`. Only then are the live brokers needed.
pub fn needs_move<T>(
    want: i32,
    current: &BTreeMap<i32, Vec<i32>>,
    ongoing: &BTreeMap<i32, T>,
) -> bool {
    ongoing.is_empty() && current.values().any(|r| count(r) != want)
}

/// Progress of a move to `want` replicas per partition.
pub fn progress<T>(
    want: i32,
    current: &BTreeMap<i32, Vec<i32>>,
    ongoing: &BTreeMap<i32, T>,
) -> MoveProgress {
    MoveProgress {
        done: current
            .iter()
            .filter(|(p, r)| !ongoing.contains_key(p) && count(r) == want)
            .count(),
        total: current.len(),
    }
}

/// Decide from the topic's replica lists (`current`, by partition), the reassignments in
/// progress among its partitions (`ongoing`, by partition) and the `live` broker ids.
/// `live` is only consulted when [`needs_move`] holds.
///
/// A running reassignment is waited for whatever its target (a spec change during a move
/// starts the next move once it finishes); restarting it would throw away copied data.
pub fn replica_action<T>(
    want: i32,
    current: &BTreeMap<i32, Vec<i32>>,
    ongoing: &BTreeMap<i32, T>,
    live: &[i32],
) -> ReplicaAction {
    if !ongoing.is_empty() {
        return ReplicaAction::Wait(progress(want, current, ongoing));
    }
    if !needs_move(want, current, ongoing) {
        return ReplicaAction::InSync;
    }
    let from = current.values().map(|r| count(r)).max().unwrap_or(0);
    let rf = usize::try_from(want).unwrap_or(0);
    match target_assignment(current, live, rf) {
        Err(PlacementError::NotEnoughBrokers { brokers, .. }) => ReplicaAction::NotEnoughBrokers {
            from,
            to: want,
            live: brokers,
        },
        Ok(target) => {
            let moves = moves(current, &target);
            let progress = MoveProgress {
                done: current.len() - moves.len(),
                total: current.len(),
            };
            ReplicaAction::Start {
                from,
                to: want,
                moves,
                progress,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(parts: &[&[i32]]) -> BTreeMap<i32, Vec<i32>> {
        parts
            .iter()
            .enumerate()
            .map(|(i, r)| (i as i32, r.to_vec()))
            .collect()
    }

    fn ongoing(partitions: &[i32]) -> BTreeMap<i32, ()> {
        partitions.iter().map(|p| (*p, ())).collect()
    }

    #[test]
    fn matching_replica_counts_need_nothing() {
        let current = assignment(&[&[0, 1], &[1, 2]]);
        assert!(!needs_move(2, &current, &ongoing(&[])));
        assert_eq!(
            replica_action(2, &current, &ongoing(&[]), &[]),
            ReplicaAction::InSync,
            "live brokers are not needed when nothing moves"
        );
    }

    #[test]
    fn growing_starts_a_move_of_the_partitions_that_change() {
        let current = assignment(&[&[0], &[1, 2], &[2]]);
        assert!(needs_move(2, &current, &ongoing(&[])));
        assert_eq!(
            replica_action(2, &current, &ongoing(&[]), &[0, 1, 2]),
            ReplicaAction::Start {
                from: 2,
                to: 2,
                moves: BTreeMap::from([(0, vec![0, 1]), (2, vec![2, 0])]),
                progress: MoveProgress { done: 1, total: 3 },
            }
        );
    }

    #[test]
    fn shrinking_keeps_the_leading_replicas() {
        let current = assignment(&[&[2, 0, 1], &[1, 2, 0]]);
        let ReplicaAction::Start {
            from, to, moves, ..
        } = replica_action(1, &current, &ongoing(&[]), &[0, 1, 2])
        else {
            panic!("expected a move");
        };
        assert_eq!((from, to), (3, 1));
        assert_eq!(moves, assignment(&[&[2], &[1]]));
    }

    #[test]
    fn a_running_reassignment_is_waited_for() {
        // Partition 0 done (3 replicas), partition 1 still moving (union shown), 2 not yet
        // at the count (e.g. a move someone else started).
        let current = assignment(&[&[0, 1, 2], &[1, 2, 0], &[2]]);
        let action = replica_action(3, &current, &ongoing(&[1]), &[]);
        assert_eq!(
            action,
            ReplicaAction::Wait(MoveProgress { done: 1, total: 3 })
        );
        assert_eq!(
            progress(3, &current, &ongoing(&[1])).to_string(),
            "1 of 3 partitions done"
        );
        assert!(!needs_move(3, &current, &ongoing(&[1])));
    }

    #[test]
    fn too_few_live_brokers_sends_nothing() {
        let current = assignment(&[&[0], &[0]]);
        assert_eq!(
            replica_action(3, &current, &ongoing(&[]), &[0, 1]),
            ReplicaAction::NotEnoughBrokers {
                from: 1,
                to: 3,
                live: 2
            }
        );
    }

    #[test]
    fn replicas_on_brokers_that_are_gone_are_replaced_while_moving() {
        // Broker 5 is not live: the target only names live brokers.
        let current = assignment(&[&[5]]);
        let ReplicaAction::Start { moves, .. } =
            replica_action(2, &current, &ongoing(&[]), &[0, 1])
        else {
            panic!("expected a move");
        };
        assert_eq!(moves, assignment(&[&[0, 1]]));
    }
}
