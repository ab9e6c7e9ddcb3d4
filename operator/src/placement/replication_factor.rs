//! One topic's target replica assignment for a replication-factor change (pure). Used by the
//! topic controller, which sends it as a partition reassignment
//! (`controllers/topic/reassign.rs`).

use std::collections::BTreeMap;

/// Why no assignment could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas than brokers.
    #[error("replication factor {rf} needs {rf} brokers, the cluster has {brokers}")]
    NotEnoughBrokers {
        /// Requested replication factor.
        rf: usize,
        /// Brokers available.
        brokers: usize,
    },
}

/// Replica lists for every partition of `current` with `rf` replicas each, over `brokers`.
///
/// Moves as little data as possible: a partition keeps its current replicas (in order, so
/// the preferred leader stays) up to `rf`; missing replicas are added round-robin over the
/// broker ids starting after the partition's index, skipping brokers it already has.
/// Replicas on brokers that no longer exist are dropped first.
pub fn target_assignment(
    current: &BTreeMap<i32, Vec<i32>>,
    brokers: &[i32],
    rf: usize,
) -> Result<BTreeMap<i32, Vec<i32>>, PlacementError> {
    let mut ids: Vec<i32> = brokers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if rf > ids.len() || rf == 0 {
        return Err(PlacementError::NotEnoughBrokers {
            rf,
            brokers: ids.len(),
        });
    }
    let mut out = BTreeMap::new();
    for (&partition, replicas) in current {
        let mut target: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|b| ids.contains(b))
            .take(rf)
            .collect();
        let start = usize::try_from(partition).unwrap_or(0) % ids.len();
        let mut candidates = ids.iter().cycle().skip(start).take(ids.len());
        while target.len() < rf {
            // rf <= ids.len(), so a broker not yet in `target` is always found.
            match candidates.next() {
                Some(b) if !target.contains(b) => target.push(*b),
                Some(_) => {}
                None => break,
            }
        }
        out.insert(partition, target);
    }
    Ok(out)
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

    #[test]
    fn growing_keeps_existing_replicas_and_spreads_new_ones() {
        let current = assignment(&[&[0], &[1], &[2], &[0]]);
        let target = target_assignment(&current, &[0, 1, 2], 3).expect("placement");
        assert_eq!(
            target,
            assignment(&[&[0, 1, 2], &[1, 2, 0], &[2, 0, 1], &[0, 1, 2]])
        );
        for replicas in target.values() {
            let mut r = replicas.clone();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 3, "no broker twice");
        }
    }

    #[test]
    fn round_robin_balances_added_replicas() {
        let current = assignment(&[&[0], &[0], &[0], &[0]]);
        let target = target_assignment(&current, &[0, 1, 2, 3], 2).expect("placement");
        let added: Vec<i32> = target.values().map(|r| r[1]).collect();
        assert_eq!(added, [1, 1, 2, 3]);
    }

    #[test]
    fn shrinking_keeps_the_leading_replicas() {
        let current = assignment(&[&[2, 0, 1], &[1, 2, 0]]);
        let target = target_assignment(&current, &[0, 1, 2], 1).expect("placement");
        assert_eq!(target, assignment(&[&[2], &[1]]));
    }

    #[test]
    fn replicas_on_missing_brokers_are_replaced() {
        let current = assignment(&[&[5, 0]]);
        let target = target_assignment(&current, &[0, 1], 2).expect("placement");
        assert_eq!(target, assignment(&[&[0, 1]]));
    }

    #[test]
    fn refuses_more_replicas_than_brokers() {
        let current = assignment(&[&[0]]);
        assert_eq!(
            target_assignment(&current, &[0, 1], 3),
            Err(PlacementError::NotEnoughBrokers { rf: 3, brokers: 2 })
        );
        assert_eq!(
            target_assignment(&current, &[1, 1, 1], 2),
            Err(PlacementError::NotEnoughBrokers { rf: 2, brokers: 1 }),
            "duplicate ids count once"
        );
    }
}
