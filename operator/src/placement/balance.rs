//! Cluster-wide replica placement (pure): the target layout that spreads partition replicas
//! and leaders evenly over a set of brokers, moving as few replicas as possible.
//!
//! Used by the cluster controller's scaling workflows: a drain is a balance over the brokers
//! that stay, a rebalance after a scale-up a balance over all of them.

use std::collections::{BTreeMap, BTreeSet};

use super::{Layout, PartitionKey};

/// Why no layout could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// A partition has more replicas than there are brokers to hold them.
    #[error(
        "topic {topic} has replication factor {rf}; {brokers} broker(s) cannot hold it \
         (each replica needs its own broker)"
    )]
    NotEnoughBrokers {
        /// A topic whose partitions do not fit.
        topic: String,
        /// Its replication factor.
        rf: usize,
        /// Brokers in the target set.
        brokers: usize,
    },
}

/// Per-broker counts of replicas and of preferred leaderships in `layout` over `brokers`
/// (brokers outside the set are not counted).
pub fn load(layout: &Layout, brokers: &BTreeMap<i32, Option<String>>) -> BrokerLoad {
    let mut l = BrokerLoad {
        replicas: brokers.keys().map(|&b| (b, 0)).collect(),
        leaders: brokers.keys().map(|&b| (b, 0)).collect(),
    };
    for replicas in layout.values() {
        for b in replicas {
            if let Some(c) = l.replicas.get_mut(b) {
                *c += 1;
            }
        }
        if let Some(c) = replicas.first().and_then(|b| l.leaders.get_mut(b)) {
            *c += 1;
        }
    }
    l
}

/// Replica and leader counts by broker id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerLoad {
    /// Replicas held.
    pub replicas: BTreeMap<i32, usize>,
    /// Partitions the broker is the preferred leader of.
    pub leaders: BTreeMap<i32, usize>,
}

impl BrokerLoad {
    /// Every broker's replica count and leader count is within one of the mean.
    pub fn is_balanced(&self) -> bool {
        spread(&self.replicas) <= 1 && spread(&self.leaders) <= 1
    }
}

fn spread(counts: &BTreeMap<i32, usize>) -> usize {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    max - min
}

/// The balanced layout of `current` over `brokers` (id -> rack):
///
/// 1. replicas on brokers outside the set move to the least-loaded broker that keeps the
///    partition on as many racks as before (a drain);
/// 2. replicas move one at a time from the most- to the least-loaded broker until replica
///    counts are within one of each other (followers first, racks never reduced);
/// 3. preferred leaders are swapped within replica lists (no data moves) until leader counts
///    are within one of each other, where the replica lists allow it.
///
/// Deterministic: the same input gives the same layout, so a workflow recomputing it on
/// every reconcile converges instead of chasing a moving target.
pub fn balance(
    current: &Layout,
    brokers: &BTreeMap<i32, Option<String>>,
) -> Result<Layout, PlacementError> {
    let mut layout = current.clone();
    for ((topic, _), replicas) in &layout {
        if replicas.len() > brokers.len() {
            return Err(PlacementError::NotEnoughBrokers {
                topic: topic.clone(),
                rf: replicas.len(),
                brokers: brokers.len(),
            });
        }
    }
    evacuate(&mut layout, brokers);
    balance_replicas(&mut layout, brokers);
    balance_leaders(&mut layout, brokers);
    Ok(layout)
}

fn racks_of<'a>(
    replicas: &[i32],
    brokers: &'a BTreeMap<i32, Option<String>>,
) -> BTreeSet<Option<&'a str>> {
    replicas
        .iter()
        .filter_map(|b| brokers.get(b).map(|r| r.as_deref()))
        .collect()
}

/// Whether replacing `old` by `new` in `replicas` keeps at least as many distinct racks.
fn keeps_racks(
    replicas: &[i32],
    old: i32,
    new: i32,
    brokers: &BTreeMap<i32, Option<String>>,
) -> bool {
    let before = racks_of(replicas, brokers).len();
    let after: Vec<i32> = replicas
        .iter()
        .map(|&b| if b == old { new } else { b })
        .collect();
    racks_of(&after, brokers).len() >= before
}

fn evacuate(layout: &mut Layout, brokers: &BTreeMap<i32, Option<String>>) {
    let mut counts = load(layout, brokers).replicas;
    for replicas in layout.values_mut() {
        for slot in 0..replicas.len() {
            let old = replicas[slot];
            if brokers.contains_key(&old) {
                continue;
            }
            let used = racks_of(replicas, brokers);
            // Least-loaded broker not yet holding the partition, a new rack first.
            let pick = brokers
                .iter()
                .filter(|(b, _)| !replicas.contains(b))
                .min_by_key(|(b, rack)| (used.contains(&rack.as_deref()), counts[b], **b))
                .map(|(b, _)| *b);
            if let Some(new) = pick {
                replicas[slot] = new;
                *counts.entry(new).or_default() += 1;
            }
        }
    }
}

fn balance_replicas(layout: &mut Layout, brokers: &BTreeMap<i32, Option<String>>) {
    let mut counts = load(layout, brokers).replicas;
    let mut per_topic = topic_counts(layout, |r| r.to_vec());
    // Every move narrows the spread, so this ends; the bound is a guard.
    for _ in 0..=layout.values().map(Vec::len).sum::<usize>() {
        let Some((key, slot, to)) = best_replica_move(layout, &counts, &per_topic, brokers) else {
            return;
        };
        let replicas = layout.get_mut(&key).expect("key comes from the layout");
        let from = replicas[slot];
        replicas[slot] = to;
        *counts.get_mut(&from).expect("counted broker") -= 1;
        *counts.get_mut(&to).expect("counted broker") += 1;
        let topic = per_topic.get_mut(&key.0).expect("counted topic");
        topic.shift(from, to);
    }
}

/// One topic's count per broker, and its total.
#[derive(Debug, Default)]
struct TopicCount {
    by_broker: BTreeMap<i32, usize>,
    total: usize,
}

impl TopicCount {
    fn get(&self, broker: i32) -> usize {
        self.by_broker.get(&broker).copied().unwrap_or(0)
    }

    fn shift(&mut self, from: i32, to: i32) {
        if let Some(c) = self.by_broker.get_mut(&from) {
            *c = c.saturating_sub(1);
        }
        *self.by_broker.entry(to).or_default() += 1;
    }

    /// How much moving one from `high` to `low` evens this topic out, relative to its size
    /// (parts per thousand of its total), so small topics spread as well as large ones:
    /// replica counts alone would move only the biggest topic's (often empty
    /// `__consumer_offsets`) replicas onto new brokers.
    fn gain(&self, high: i32, low: i32) -> i64 {
        let diff = i64::try_from(self.get(high)).unwrap_or(i64::MAX)
            - i64::try_from(self.get(low)).unwrap_or(0);
        diff * 1000 / i64::try_from(self.total.max(1)).unwrap_or(1)
    }
}

/// Per topic, how many of `counted(replicas)` each broker has.
fn topic_counts(
    layout: &Layout,
    counted: impl Fn(&[i32]) -> Vec<i32>,
) -> BTreeMap<String, TopicCount> {
    let mut out: BTreeMap<String, TopicCount> = BTreeMap::new();
    for ((topic, _), replicas) in layout {
        let t = out.entry(topic.clone()).or_default();
        for b in counted(replicas) {
            *t.by_broker.entry(b).or_default() += 1;
            t.total += 1;
        }
    }
    out
}

/// A move of one replica from a broker above the other's count by two or more, trying the
/// widest gaps first, and among the candidates for a pair of brokers the one that evens out
/// its topic most (followers before leaders on a tie).
fn best_replica_move(
    layout: &Layout,
    counts: &BTreeMap<i32, usize>,
    per_topic: &BTreeMap<String, TopicCount>,
    brokers: &BTreeMap<i32, Option<String>>,
) -> Option<(PartitionKey, usize, i32)> {
    uneven_pairs(counts).into_iter().find_map(|(high, low)| {
        // The first of the best candidates in key order: `rev` + `max_by_key` keeps it.
        layout
            .iter()
            .rev()
            .filter_map(|(key, replicas)| {
                let slot = replicas.iter().position(|&b| b == high)?;
                let fits = !replicas.contains(&low) && keeps_racks(replicas, high, low, brokers);
                fits.then(|| {
                    let gain = per_topic.get(&key.0).map_or(0, |t| t.gain(high, low));
                    // Highest gain, then followers before leaders.
                    ((gain, slot > 0), key, slot)
                })
            })
            .max_by_key(|(rank, _, _)| *rank)
            .map(|(_, key, slot)| (key.clone(), slot, low))
    })
}

/// `(high, low)` broker pairs whose counts differ by two or more, widest gaps first.
fn uneven_pairs(counts: &BTreeMap<i32, usize>) -> Vec<(i32, i32)> {
    let mut by_load: Vec<(i32, usize)> = counts.iter().map(|(&b, &c)| (b, c)).collect();
    by_load.sort_by_key(|&(b, c)| (std::cmp::Reverse(c), b));
    by_load
        .iter()
        .flat_map(|&(high, hc)| {
            by_load
                .iter()
                .rev()
                .take_while(move |&&(_, lc)| hc >= lc + 2)
                .map(move |&(low, _)| (high, low))
        })
        .collect()
}

fn balance_leaders(layout: &mut Layout, brokers: &BTreeMap<i32, Option<String>>) {
    let mut leaders = load(layout, brokers).leaders;
    let mut per_topic = topic_counts(layout, |r| r.first().copied().into_iter().collect());
    for _ in 0..=layout.len() {
        let Some((key, slot)) = best_leader_swap(layout, &leaders, &per_topic) else {
            return;
        };
        let replicas = layout.get_mut(&key).expect("key comes from the layout");
        let (from, to) = (replicas[0], replicas[slot]);
        replicas.swap(0, slot);
        *leaders.get_mut(&from).expect("counted broker") -= 1;
        *leaders.get_mut(&to).expect("counted broker") += 1;
        per_topic
            .get_mut(&key.0)
            .expect("counted topic")
            .shift(from, to);
    }
}

fn best_leader_swap(
    layout: &Layout,
    leaders: &BTreeMap<i32, usize>,
    per_topic: &BTreeMap<String, TopicCount>,
) -> Option<(PartitionKey, usize)> {
    uneven_pairs(leaders).into_iter().find_map(|(high, low)| {
        layout
            .iter()
            .rev()
            .filter(|(_, replicas)| replicas.first() == Some(&high))
            .filter_map(|(key, replicas)| {
                let slot = replicas.iter().position(|&b| b == low)?;
                let gain = per_topic.get(&key.0).map_or(0, |t| t.gain(high, low));
                Some((gain, key, slot))
            })
            .max_by_key(|(gain, _, _)| *gain)
            .map(|(_, key, slot)| (key.clone(), slot))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::moves;

    fn brokers(ids: std::ops::Range<i32>) -> BTreeMap<i32, Option<String>> {
        ids.map(|b| (b, None)).collect()
    }

    /// `count` partitions of topic `t` laid out round-robin over `n` brokers with `rf`.
    fn round_robin(t: &str, count: i32, n: i32, rf: i32) -> Layout {
        (0..count)
            .map(|p| ((t.to_string(), p), (0..rf).map(|r| (p + r) % n).collect()))
            .collect()
    }

    fn assert_valid(layout: &Layout, brokers: &BTreeMap<i32, Option<String>>) {
        for (key, replicas) in layout {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(
                distinct.len(),
                replicas.len(),
                "{key:?} names a broker twice"
            );
            assert!(
                replicas.iter().all(|b| brokers.contains_key(b)),
                "{key:?} outside the set"
            );
        }
    }

    #[test]
    fn scale_up_spreads_replicas_and_leaders_onto_new_brokers() {
        let mut current = round_robin("orders", 12, 3, 3);
        current.extend(round_robin("__consumer_offsets", 50, 3, 3));
        let set = brokers(0..5);
        let target = balance(&current, &set).expect("fits");
        assert_valid(&target, &set);
        let l = load(&target, &set);
        assert!(l.is_balanced(), "{l:?}");
        assert!(l.replicas[&3] >= 37 && l.replicas[&4] >= 37, "{l:?}");
        // Only what must move moves: 186 replicas over 5 brokers is ~37 each, so about 74
        // replicas land on the new brokers.
        let moved: usize = moves(&current, &target)
            .iter()
            .map(|(k, r)| r.iter().filter(|b| !current[k].contains(b)).count())
            .sum();
        assert!(moved <= 76, "moved {moved}");
    }

    #[test]
    fn every_topic_gets_its_share_of_the_new_brokers_not_only_the_largest() {
        let mut current = round_robin("__consumer_offsets", 50, 3, 3);
        current.extend(round_robin("load", 12, 3, 3));
        let set = brokers(0..5);
        let target = balance(&current, &set).expect("fits");
        assert!(load(&target, &set).is_balanced());
        for new in [3, 4] {
            let held = target
                .iter()
                .filter(|((t, _), r)| t == "load" && r.contains(&new))
                .count();
            // 36 replicas of `load` over 5 brokers: about 7 each.
            assert!(held >= 5, "broker {new} holds {held} replicas of load");
            let led = target
                .iter()
                .filter(|((t, _), r)| t == "load" && r[0] == new)
                .count();
            assert!(led >= 1, "broker {new} leads no partition of load");
        }
    }

    #[test]
    fn a_drain_empties_the_removed_brokers_and_stays_balanced() {
        let current = round_robin("t", 20, 5, 3);
        let set = brokers(0..3);
        let target = balance(&current, &set).expect("fits");
        assert_valid(&target, &set);
        assert!(load(&target, &set).is_balanced());
        // Partitions already on the staying brokers only are left alone.
        assert_eq!(target[&("t".into(), 0)], current[&("t".into(), 0)]);
    }

    #[test]
    fn a_balanced_layout_is_left_as_it_is() {
        let current = round_robin("t", 9, 3, 2);
        let set = brokers(0..3);
        assert!(moves(&current, &balance(&current, &set).unwrap()).is_empty());
    }

    #[test]
    fn leaders_are_balanced_by_swapping_without_moving_data() {
        // Every partition led by broker 0.
        let current: Layout = (0..6).map(|p| (("t".into(), p), vec![0, 1, 2])).collect();
        let set = brokers(0..3);
        let target = balance(&current, &set).unwrap();
        assert!(load(&target, &set).is_balanced());
        for (k, r) in &target {
            let mut a = r.clone();
            let mut b = current[k].clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "replica sets unchanged");
        }
    }

    #[test]
    fn racks_are_never_reduced() {
        let set: BTreeMap<i32, Option<String>> = [
            (0, Some("a".to_string())),
            (1, Some("b".to_string())),
            (2, Some("a".to_string())),
            (3, Some("b".to_string())),
        ]
        .into_iter()
        .collect();
        let current: Layout = (0..8).map(|p| (("t".into(), p), vec![0, 1])).collect();
        let target = balance(&current, &set).unwrap();
        for r in target.values() {
            assert_eq!(racks_of(r, &set).len(), 2, "{r:?} keeps both racks");
        }
        assert!(load(&target, &set).is_balanced());
    }

    #[test]
    fn a_replication_factor_above_the_broker_count_is_refused() {
        let current = round_robin("wide", 2, 5, 3);
        assert_eq!(
            balance(&current, &brokers(0..2)),
            Err(PlacementError::NotEnoughBrokers {
                topic: "wide".into(),
                rf: 3,
                brokers: 2
            })
        );
    }
}
