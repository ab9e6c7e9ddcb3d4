//! Which brokers vote in the metadata quorum: a pure decision, taken by the leader.

use std::collections::BTreeSet;

/// A majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The next voter set, or `None` when the current one should stay.
///
/// - `current`: today's voters; `members`: every broker in the quorum (voters and learners);
///   `live`: brokers known to be alive and caught up; `target`: the wanted number of voters.
/// - Live current voters stay. Dead current voters are replaced by live members that do not
///   vote yet (lowest id first); with no replacement they stay, so the set never shrinks
///   because of a failure (a smaller set would tolerate fewer failures, not more).
/// - The set grows with live members towards `target`, to odd sizes only (4 voters tolerate no
///   more failures than 3, and need one more answer).
/// - With fewer live current voters than a majority nothing changes: the change could not be
///   committed, and this view of liveness may be the partitioned one.
/// - When `target` shrinks, the set shrinks at most down to a majority of the current voters
///   in one step (from 2 voters: to 1).
pub fn choose_voters(
    current: &BTreeSet<i32>,
    members: &BTreeSet<i32>,
    live: &BTreeSet<i32>,
    target: usize,
) -> Option<BTreeSet<i32>> {
    let target = target.max(1);
    if current.is_empty() {
        return None;
    }
    let live_current: BTreeSet<i32> = current.intersection(live).copied().collect();
    if live_current.len() < majority(current.len()) {
        return None;
    }
    let mut next = live_current.clone();
    if next.len() > target {
        // Shrink, keeping the lowest ids, at most down to a majority of the current voters
        // per step (from 2 voters: to 1).
        let keep = target.max(majority(current.len())).min(current.len() - 1);
        next = next.into_iter().take(keep).collect();
    } else {
        // Replace dead voters, then grow towards the target, with live members that do not
        // vote yet, lowest id first.
        let mut added = None;
        for m in members
            .iter()
            .filter(|m| live.contains(m) && !current.contains(m))
        {
            if next.len() >= target {
                break;
            }
            next.insert(*m);
            added = Some(*m);
        }
        // Growing past the current size lands on odd sizes only.
        if next.len() > current.len() && next.len().is_multiple_of(2) {
            if let Some(last) = added {
                next.remove(&last);
            }
        }
        // Dead voters without a replacement stay.
        let floor = current.len().min(target);
        for dead in current.difference(live) {
            if next.len() >= floor {
                break;
            }
            next.insert(*dead);
        }
        if next == *current && live_current.len() == current.len() && current.len() >= 3 {
            next = toward_lowest_ids(current, members, live);
        }
    }
    (next != *current).then_some(next)
}

/// One swap of the highest-id voter for a lower-id live member that does not vote, if
/// any. Voters drift to high ids as brokers restart (a dead voter is replaced by whoever is
/// live); a StatefulSet removes the highest ordinals first, so voters on the lowest ids are
/// the ones a scale-down never takes away. One voter per step, and only from three voters
/// up, keeps a majority in place.
fn toward_lowest_ids(
    current: &BTreeSet<i32>,
    members: &BTreeSet<i32>,
    live: &BTreeSet<i32>,
) -> BTreeSet<i32> {
    let mut next = current.clone();
    let highest = current.last().copied();
    let lowest_free = members
        .iter()
        .find(|m| live.contains(m) && !current.contains(m))
        .copied();
    if let (Some(out), Some(r#in)) = (highest, lowest_free) {
        if r#in < out {
            next.remove(&out);
            next.insert(r#in);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn examples() {
        // A single founder grows to 3 once two more brokers are live, not to 2.
        assert_eq!(
            choose_voters(&set(&[0]), &set(&[0, 1]), &set(&[0, 1]), 3),
            None
        );
        assert_eq!(
            choose_voters(&set(&[0]), &set(&[0, 1, 2]), &set(&[0, 1, 2]), 3),
            Some(set(&[0, 1, 2]))
        );
        // A dead voter is replaced by a live learner.
        assert_eq!(
            choose_voters(&set(&[0, 1, 2]), &set(&[0, 1, 2, 3]), &set(&[0, 1, 3]), 3),
            Some(set(&[0, 1, 3]))
        );
        // No replacement: the dead voter stays, nothing changes.
        assert_eq!(
            choose_voters(&set(&[0, 1, 2]), &set(&[0, 1, 2]), &set(&[0, 1]), 3),
            None
        );
        // No majority alive: no change.
        assert_eq!(
            choose_voters(
                &set(&[0, 1, 2]),
                &set(&[0, 1, 2, 3, 4]),
                &set(&[0, 3, 4]),
                3
            ),
            None
        );
        // Target 5 with 4 live brokers stays at 3, then 5 with the fifth.
        let members = set(&[0, 1, 2, 3, 4]);
        assert_eq!(
            choose_voters(&set(&[0, 1, 2]), &members, &set(&[0, 1, 2, 3]), 5),
            None
        );
        assert_eq!(
            choose_voters(&set(&[0, 1, 2]), &members, &members, 5),
            Some(members.clone())
        );
        // Target lowered from 5 to 1: 3 first (a majority of 5), then 2, then 1.
        assert_eq!(
            choose_voters(&members, &members, &members, 1),
            Some(set(&[0, 1, 2]))
        );
        assert_eq!(
            choose_voters(&set(&[0, 1, 2]), &members, &members, 1),
            Some(set(&[0, 1]))
        );
        assert_eq!(
            choose_voters(&set(&[0, 1]), &members, &members, 1),
            Some(set(&[0]))
        );
        assert_eq!(choose_voters(&set(&[0]), &members, &members, 1), None);
        // Voters move down to the lowest live ids, one per step.
        assert_eq!(
            choose_voters(&set(&[2, 3, 4]), &members, &members, 3),
            Some(set(&[0, 2, 3]))
        );
        assert_eq!(
            choose_voters(&set(&[0, 2, 3]), &members, &members, 3),
            Some(set(&[0, 1, 2]))
        );
        assert_eq!(choose_voters(&set(&[0, 1, 2]), &members, &members, 3), None);
        // Not while a voter is down.
        assert_eq!(
            choose_voters(&set(&[1, 2, 3]), &members, &set(&[0, 1, 2]), 3),
            Some(set(&[0, 1, 2])),
            "the dead voter is replaced"
        );
        // A learner that is not live is never promoted.
        assert_eq!(
            choose_voters(&set(&[0]), &set(&[0, 1, 2]), &set(&[0, 1]), 3),
            None
        );
    }

    fn ids() -> impl Strategy<Value = BTreeSet<i32>> {
        proptest::collection::btree_set(0..8i32, 0..8)
    }

    proptest! {
        #[test]
        fn invariants(
            current in ids(),
            extra_members in ids(),
            live in ids(),
            target in 1usize..6,
        ) {
            let members: BTreeSet<i32> = current.union(&extra_members).copied().collect();
            if let Some(next) = choose_voters(&current, &members, &live, target) {
                prop_assert!(next != current);
                prop_assert!(!next.is_empty());
                // New voters are live members.
                for v in next.difference(&current) {
                    prop_assert!(members.contains(v) && live.contains(v));
                }
                // A majority of the current voters, all alive, stays.
                let kept_live = next.intersection(&current).filter(|v| live.contains(v)).count();
                prop_assert!(kept_live >= majority(current.len()).min(current.len() - 1).max(1));
                prop_assert!(next.iter().all(|v| live.contains(v) || current.contains(v)));
                // The set does not shrink below the target because of failures.
                if next.len() < current.len() {
                    prop_assert!(next.len() >= target);
                }
                // Growing lands on odd sizes.
                if next.len() > current.len() {
                    prop_assert!(!next.len().is_multiple_of(2));
                    prop_assert!(next.len() <= target);
                }
                // Applying the decision again changes nothing more, unless the target is
                // reached in several shrinking steps or voters keep moving to lower ids
                // (a swap: same size, lower highest id).
                if next.len() >= current.len() {
                    if let Some(again) = choose_voters(&next, &members, &live, target) {
                        prop_assert_eq!(again.len(), next.len());
                        prop_assert!(again.last() < next.last());
                    }
                }
            }
        }
    }
}
