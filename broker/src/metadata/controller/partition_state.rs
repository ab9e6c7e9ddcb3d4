//! Pure transitions of one partition's replica set, ISR and leadership: what the controller
//! decides when a broker is fenced or comes back, when a leader changes its ISR, when a
//! reassignment starts, progresses or is cancelled, and when leadership goes back to the
//! preferred replica. No I/O; every function returns the new state or `None` for no change.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

use crate::metadata::image::{PartitionImage, NO_LEADER};

/// Which brokers can lead or be in an ISR right now, and whether an out-of-sync replica may
/// be elected when no in-sync one is left (`unclean.leader.election.enable`).
#[derive(Debug, Clone, Copy)]
pub struct Electorate<'a> {
    pub live: &'a BTreeSet<i32>,
    pub unclean: bool,
}

/// Finishes a change: bumps the partition epoch, and the leader epoch when the leader moved.
fn commit(old: &PartitionImage, mut new: PartitionImage) -> Option<PartitionImage> {
    if same(old, &new) {
        return None;
    }
    new.partition_epoch = old.partition_epoch + 1;
    new.leader_epoch = if new.leader != old.leader {
        old.leader_epoch + 1
    } else {
        old.leader_epoch
    };
    Some(new)
}

fn same(a: &PartitionImage, b: &PartitionImage) -> bool {
    a.replicas == b.replicas
        && a.isr == b.isr
        && a.leader == b.leader
        && a.adding_replicas == b.adding_replicas
        && a.removing_replicas == b.removing_replicas
}

/// The first live ISR member in replica order, target replicas before ones being removed;
/// an out-of-sync live replica only when unclean election is allowed and no ISR member is live.
fn elect(p: &PartitionImage, electorate: Electorate<'_>) -> i32 {
    let ordered = p
        .replicas
        .iter()
        .filter(|r| !p.removing_replicas.contains(r))
        .chain(
            p.replicas
                .iter()
                .filter(|r| p.removing_replicas.contains(r)),
        );
    let candidates: Vec<i32> = ordered
        .copied()
        .filter(|r| electorate.live.contains(r))
        .collect();
    if let Some(r) = candidates.iter().find(|r| p.isr.contains(r)) {
        return *r;
    }
    if electorate.unclean {
        if let Some(r) = candidates.first() {
            return *r;
        }
    }
    NO_LEADER
}

/// `broker` is fenced, shutting down or gone: it leaves the ISR (unless it is the last member,
/// so that it can lead again when it returns and no acknowledged record is lost) and loses
/// leadership to another in-sync replica.
pub fn without_broker(
    p: &PartitionImage,
    broker: i32,
    electorate: Electorate<'_>,
) -> Option<PartitionImage> {
    if !p.replicas.contains(&broker) {
        return None;
    }
    let mut new = p.clone();
    if new.isr.len() > 1 {
        new.isr.retain(|r| *r != broker);
    }
    if new.leader == broker || new.leader == NO_LEADER {
        let live_without: BTreeSet<i32> = electorate
            .live
            .iter()
            .copied()
            .filter(|b| *b != broker)
            .collect();
        let leader = elect(
            &new,
            Electorate {
                live: &live_without,
                unclean: electorate.unclean,
            },
        );
        if leader != NO_LEADER && !new.isr.contains(&leader) {
            // Unclean election: the new leader's log is the truth from now on.
            new.isr = vec![leader];
        }
        new.leader = leader;
    }
    commit(p, new)
}

/// A broker came back (unfenced): leaderless partitions get a leader if one is eligible now.
pub fn elect_if_leaderless(
    p: &PartitionImage,
    electorate: Electorate<'_>,
) -> Option<PartitionImage> {
    if p.leader != NO_LEADER {
        return None;
    }
    let mut new = p.clone();
    new.leader = elect(p, electorate);
    if new.leader == NO_LEADER {
        return None;
    }
    if !new.isr.contains(&new.leader) {
        new.isr = vec![new.leader];
    }
    commit(p, new)
}

/// Leadership back to the preferred replica (the first target replica) when it is live and
/// in sync.
pub fn elect_preferred(p: &PartitionImage, live: &BTreeSet<i32>) -> Option<PartitionImage> {
    let preferred = *p.target_replicas().first()?;
    if p.leader == preferred || !live.contains(&preferred) || !p.isr.contains(&preferred) {
        return None;
    }
    let mut new = p.clone();
    new.leader = preferred;
    commit(p, new)
}

/// An ISR change asked for by the partition's leader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IsrChange {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Validates a leader's ISR change (Kafka's AlterPartition rules) and applies it; completes a
/// reassignment whose new replicas are now all in sync.
pub fn alter_isr(
    p: &PartitionImage,
    change: &IsrChange,
    electorate: Electorate<'_>,
) -> Result<Option<PartitionImage>, (ResponseError, String)> {
    if change.leader != p.leader {
        return Err((
            ResponseError::NotLeaderOrFollower,
            format!(
                "broker {} is not the leader (leader is {})",
                change.leader, p.leader
            ),
        ));
    }
    if change.leader_epoch != p.leader_epoch {
        return Err((
            ResponseError::FencedLeaderEpoch,
            format!(
                "leader epoch {} is not the current {}",
                change.leader_epoch, p.leader_epoch
            ),
        ));
    }
    if change.partition_epoch != p.partition_epoch {
        return Err((
            ResponseError::InvalidUpdateVersion,
            format!(
                "partition epoch {} is not the current {}",
                change.partition_epoch, p.partition_epoch
            ),
        ));
    }
    if !change.new_isr.contains(&p.leader) {
        return Err((
            ResponseError::InvalidRequest,
            "the ISR must contain the leader".into(),
        ));
    }
    if let Some(r) = change.new_isr.iter().find(|r| !p.replicas.contains(r)) {
        return Err((
            ResponseError::InvalidRequest,
            format!("broker {r} is not a replica"),
        ));
    }
    if let Some(r) = change
        .new_isr
        .iter()
        .find(|r| !p.isr.contains(r) && !electorate.live.contains(r))
    {
        return Err((
            ResponseError::IneligibleReplica,
            format!("broker {r} is fenced and cannot join the ISR"),
        ));
    }
    let mut new = p.clone();
    new.isr = change.new_isr.clone();
    new.isr
        .sort_unstable_by_key(|r| p.replicas.iter().position(|x| x == r));
    new.isr.dedup();
    let new = complete_reassignment(&new, electorate).unwrap_or(new);
    Ok(commit(p, new))
}

/// Starts moving a partition to `target` replicas: the new ones are added (and catch up as
/// followers), the old ones stay until every target replica is in sync.
pub fn start_reassignment(
    p: &PartitionImage,
    target: &[i32],
    electorate: Electorate<'_>,
) -> Option<PartitionImage> {
    let base = cancelled(p, electorate);
    let current = base.as_ref().unwrap_or(p);
    if current.replicas == target {
        return base.and_then(|b| commit(p, b));
    }
    let mut new = current.clone();
    new.adding_replicas = target
        .iter()
        .copied()
        .filter(|r| !current.replicas.contains(r))
        .collect();
    new.removing_replicas = current
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    new.replicas = target
        .iter()
        .copied()
        .chain(new.removing_replicas.iter().copied())
        .collect();
    let new = complete_reassignment(&new, electorate).unwrap_or(new);
    commit(p, new)
}

/// A running reassignment undone: back to the original replicas.
fn cancelled(p: &PartitionImage, electorate: Electorate<'_>) -> Option<PartitionImage> {
    if !p.is_reassigning() {
        return None;
    }
    let mut new = p.clone();
    let original: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect();
    new.replicas = original;
    new.adding_replicas.clear();
    new.removing_replicas.clear();
    settle_on_replicas(&mut new, electorate);
    Some(new)
}

/// Cancels a running reassignment (AlterPartitionReassignments with a null target).
pub fn cancel_reassignment(
    p: &PartitionImage,
    electorate: Electorate<'_>,
) -> Option<PartitionImage> {
    cancelled(p, electorate).and_then(|new| commit(p, new))
}

/// Completes a reassignment once every target replica is in the ISR: the removed replicas
/// leave, and leadership moves if the leader was one of them.
pub fn complete_reassignment(
    p: &PartitionImage,
    electorate: Electorate<'_>,
) -> Option<PartitionImage> {
    if !p.is_reassigning() {
        return None;
    }
    let target = p.target_replicas();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return None;
    }
    let mut new = p.clone();
    new.replicas = target;
    new.adding_replicas.clear();
    new.removing_replicas.clear();
    settle_on_replicas(&mut new, electorate);
    Some(new)
}

/// After the replica set shrank: the ISR keeps only replicas, and a leader outside the
/// replicas hands over to an in-sync replica.
fn settle_on_replicas(p: &mut PartitionImage, electorate: Electorate<'_>) {
    let replicas = p.replicas.clone();
    let in_set: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if !in_set.is_empty() {
        p.isr = in_set;
    }
    if !p.replicas.contains(&p.leader) {
        p.leader = elect(p, electorate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionImage {
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 9,
            adding_replicas: vec![],
            removing_replicas: vec![],
        }
    }

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    fn clean(live: &BTreeSet<i32>) -> Electorate<'_> {
        Electorate {
            live,
            unclean: false,
        }
    }

    #[test]
    fn fencing_the_leader_elects_an_in_sync_replica_and_bumps_epochs() {
        let l = live(&[1, 2]);
        let p = part(&[0, 1, 2], &[0, 2], 0);
        let new = without_broker(&p, 0, clean(&l)).unwrap();
        assert_eq!(new.leader, 2, "1 is not in sync, 2 is");
        assert_eq!(new.isr, vec![2]);
        assert_eq!((new.leader_epoch, new.partition_epoch), (6, 10));
    }

    #[test]
    fn the_last_in_sync_replica_stays_in_the_isr_and_the_partition_goes_offline() {
        let l = live(&[1]);
        let p = part(&[0, 1], &[0], 0);
        let new = without_broker(&p, 0, clean(&l)).unwrap();
        assert_eq!(new.leader, NO_LEADER);
        assert_eq!(new.isr, vec![0]);
        // Unclean election would take the out-of-sync replica instead.
        let unclean = without_broker(
            &p,
            0,
            Electorate {
                live: &l,
                unclean: true,
            },
        )
        .unwrap();
        assert_eq!((unclean.leader, unclean.isr.clone()), (1, vec![1]));
        // When broker 0 returns, it leads again.
        let back = elect_if_leaderless(&new, clean(&live(&[0, 1]))).unwrap();
        assert_eq!(back.leader, 0);
        assert!(back.leader_epoch > new.leader_epoch);
    }

    #[test]
    fn a_follower_leaving_only_shrinks_the_isr() {
        let l = live(&[0, 2]);
        let p = part(&[0, 1, 2], &[0, 1, 2], 0);
        let new = without_broker(&p, 1, clean(&l)).unwrap();
        assert_eq!((new.leader, new.isr.clone()), (0, vec![0, 2]));
        assert_eq!(new.leader_epoch, p.leader_epoch, "leader unchanged");
        assert!(without_broker(&p, 7, clean(&l)).is_none(), "not a replica");
    }

    #[test]
    fn isr_changes_are_fenced_by_epochs_and_membership() {
        let l = live(&[0, 1, 2]);
        let p = part(&[0, 1, 2], &[0], 0);
        let ok = IsrChange {
            leader: 0,
            leader_epoch: 5,
            partition_epoch: 9,
            new_isr: vec![1, 0],
        };
        let new = alter_isr(&p, &ok, clean(&l)).unwrap().unwrap();
        assert_eq!(new.isr, vec![0, 1], "kept in replica order");
        let stale = IsrChange {
            partition_epoch: 8,
            ..ok.clone()
        };
        assert_eq!(
            alter_isr(&p, &stale, clean(&l)).unwrap_err().0,
            ResponseError::InvalidUpdateVersion
        );
        let not_leader = IsrChange {
            leader: 1,
            ..ok.clone()
        };
        assert_eq!(
            alter_isr(&p, &not_leader, clean(&l)).unwrap_err().0,
            ResponseError::NotLeaderOrFollower
        );
        let fenced = IsrChange {
            new_isr: vec![0, 2],
            ..ok.clone()
        };
        assert_eq!(
            alter_isr(&p, &fenced, clean(&live(&[0, 1]))).unwrap_err().0,
            ResponseError::IneligibleReplica
        );
    }

    #[test]
    fn reassignment_adds_catches_up_then_removes_and_moves_leadership() {
        let l = live(&[0, 1, 2, 3]);
        let p = part(&[0, 1, 2], &[0, 1, 2], 0);
        let moving = start_reassignment(&p, &[1, 2, 3], clean(&l)).unwrap();
        assert_eq!(moving.replicas, vec![1, 2, 3, 0]);
        assert_eq!(moving.adding_replicas, vec![3]);
        assert_eq!(moving.removing_replicas, vec![0]);
        assert_eq!(moving.leader, 0, "the old leader leads until the switch");
        // Broker 3 catches up: the leader adds it to the ISR, which completes the move.
        let change = IsrChange {
            leader: 0,
            leader_epoch: moving.leader_epoch,
            partition_epoch: moving.partition_epoch,
            new_isr: vec![0, 1, 2, 3],
        };
        let done = alter_isr(&moving, &change, clean(&l)).unwrap().unwrap();
        assert_eq!(done.replicas, vec![1, 2, 3]);
        assert_eq!(done.isr, vec![1, 2, 3]);
        assert_eq!(done.leader, 1);
        assert!(!done.is_reassigning());
        assert!(done.leader_epoch > moving.leader_epoch);
    }

    #[test]
    fn reassignment_can_be_cancelled_and_shrinking_completes_at_once() {
        let l = live(&[0, 1, 2, 3]);
        let p = part(&[0, 1, 2], &[0, 1, 2], 0);
        let moving = start_reassignment(&p, &[1, 2, 3], clean(&l)).unwrap();
        let back = cancel_reassignment(&moving, clean(&l)).unwrap();
        // Kafka's order after a cancel: the kept target replicas, then the original rest.
        assert_eq!(back.replicas, vec![1, 2, 0]);
        assert_eq!(back.leader, 0);
        assert!(!back.is_reassigning());
        let shrunk = start_reassignment(&p, &[0, 1], clean(&l)).unwrap();
        assert_eq!(shrunk.replicas, vec![0, 1]);
        assert_eq!(shrunk.isr, vec![0, 1]);
        assert!(start_reassignment(&p, &[0, 1, 2], clean(&l)).is_none());
    }

    #[test]
    fn preferred_leader_returns_when_in_sync() {
        let p = part(&[0, 1, 2], &[1, 2], 1);
        assert!(
            elect_preferred(&p, &live(&[0, 1, 2])).is_none(),
            "0 not in sync"
        );
        let p = part(&[0, 1, 2], &[0, 1, 2], 1);
        assert_eq!(elect_preferred(&p, &live(&[0, 1, 2])).unwrap().leader, 0);
        assert!(elect_preferred(&p, &live(&[1, 2])).is_none(), "0 not live");
    }
}
