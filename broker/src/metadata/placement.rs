//! Replica placement for new partitions: pure functions.

/// Kafka-style round-robin placement: partition `p`'s replicas start at broker
/// `(start + p) % n` and take the following brokers, so leaders (the first replica) spread evenly.
/// `brokers` must be sorted and `replication_factor <= brokers.len()`.
pub fn assign_replicas(
    brokers: &[i32],
    first_partition: i32,
    count: i32,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    (first_partition..first_partition + count)
        .map(|p| {
            let first = (start + p as usize) % n;
            (0..replication_factor)
                .map(|r| brokers[(first + r) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_spread_and_replicas_distinct() {
        let a = assign_replicas(&[1, 2, 3], 0, 6, 2, 0);
        assert_eq!(a.len(), 6);
        for r in &a {
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
        }
        let leaders: Vec<i32> = a.iter().map(|r| r[0]).collect();
        for b in [1, 2, 3] {
            assert_eq!(leaders.iter().filter(|l| **l == b).count(), 2);
        }
        assert_eq!(assign_replicas(&[0], 3, 2, 1, 0), vec![vec![0], vec![0]]);
    }
}
