//! Replica placement for new partitions: pure functions.

/// A broker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    pub id: i32,
    pub rack: Option<String>,
}

/// Kafka-style round-robin placement over a rack-alternating broker order: partition `p`'s
/// replicas start at position `(start + p) % n` and take the following brokers, so leaders
/// (the first replica) spread evenly, and consecutive brokers are on different racks whenever
/// racks allow, which puts a partition's replicas on as many racks as possible.
/// `replication_factor <= brokers.len()`.
pub fn assign_replicas(
    brokers: &[PlacementBroker],
    first_partition: i32,
    count: i32,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let order = rack_alternating(brokers);
    let n = order.len();
    (first_partition..first_partition + count)
        .map(|p| {
            let first = (start + p as usize) % n;
            (0..replication_factor)
                .map(|r| order[(first + r) % n])
                .collect()
        })
        .collect()
}

/// Broker ids ordered so racks alternate: one broker of each rack in turn (racks by name,
/// brokers by id within a rack; brokers without a rack form their own group).
fn rack_alternating(brokers: &[PlacementBroker]) -> Vec<i32> {
    let mut by_rack: std::collections::BTreeMap<Option<&str>, Vec<i32>> = Default::default();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    by_rack.values_mut().for_each(|ids| ids.sort_unstable());
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| by_rack.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(i32, Option<&str>)]) -> Vec<PlacementBroker> {
        spec.iter()
            .map(|(id, rack)| PlacementBroker {
                id: *id,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn leaders_spread_and_replicas_distinct() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let a = assign_replicas(&b, 0, 6, 2, 0);
        assert_eq!(a.len(), 6);
        for r in &a {
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
        }
        let leaders: Vec<i32> = a.iter().map(|r| r[0]).collect();
        for b in [1, 2, 3] {
            assert_eq!(leaders.iter().filter(|l| **l == b).count(), 2);
        }
        assert_eq!(
            assign_replicas(&brokers(&[(0, None)]), 3, 2, 1, 0),
            vec![vec![0], vec![0]]
        );
    }

    #[test]
    fn replicas_span_racks() {
        let b = brokers(&[
            (0, Some("a")),
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("b")),
            (4, Some("c")),
            (5, Some("c")),
        ]);
        let rack = |id: i32| b.iter().find(|x| x.id == id).unwrap().rack.clone();
        for replicas in assign_replicas(&b, 0, 12, 3, 0) {
            let mut racks: Vec<_> = replicas.iter().map(|r| rack(*r)).collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3, "{replicas:?} on one rack twice");
        }
        let leaders = assign_replicas(&b, 0, 12, 3, 0);
        for id in 0..6 {
            assert_eq!(leaders.iter().filter(|r| r[0] == id).count(), 2);
        }
    }
}
