//! A partition leader's decisions about its followers, as pure functions: what a follower's
//! fetch says about it, the high watermark, and when the in-sync replica set (ISR) grows or
//! shrinks. They follow Kafka's `Partition`/`Replica` logic; the partition applies them under
//! its lock and sends the resulting [`IsrUpdate`]s to the controller.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use uuid::Uuid;

/// A leader's request to change a partition's ISR (Kafka's AlterPartition). The controller
/// accepts it only if `leader_epoch` and `partition_epoch` are still current; the outcome comes
/// back as a `PartitionChange` metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrUpdate {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// An ISR change sent and not yet seen in metadata. One at a time per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<i32>,
    pub sent_at_ms: i64,
}

/// Milliseconds on a monotonic clock (lag and timeouts must not jump with the wall clock).
pub fn monotonic_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as i64
}

/// Offset a follower has not reported yet.
pub const UNKNOWN_OFFSET: i64 = -1;
/// A time long before anything (the monotonic clock starts near zero at process start, so 0
/// would look recent). Far from `i64::MIN` so differences cannot overflow.
pub const NEVER_MS: i64 = i64::MIN / 4;

/// What the leader knows about one follower, from its fetches (Kafka's `ReplicaState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch.
    pub log_end_offset: i64,
    /// Last time the follower had everything the leader had (ms, monotonic).
    pub last_caught_up_ms: i64,
    /// The leader's log end offset when the follower last fetched.
    pub last_fetch_leader_leo: i64,
    pub last_fetch_ms: i64,
}

impl FollowerState {
    /// The state when this broker becomes leader: nothing known of the follower's log; an
    /// in-sync follower gets a full lag period to show up before it is dropped from the ISR.
    pub fn at_leadership(in_isr: bool, now_ms: i64) -> FollowerState {
        FollowerState {
            log_end_offset: UNKNOWN_OFFSET,
            last_caught_up_ms: if in_isr { now_ms } else { NEVER_MS },
            last_fetch_leader_leo: UNKNOWN_OFFSET,
            last_fetch_ms: NEVER_MS,
        }
    }

    /// A fetch at `fetch_offset` while the leader's log ended at `leader_leo`. A follower
    /// that reached the leader's end, or the end as of its previous fetch, was caught up at
    /// that fetch.
    pub fn record_fetch(&mut self, fetch_offset: i64, leader_leo: i64, now_ms: i64) {
        if fetch_offset >= leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= self.last_fetch_leader_leo && self.last_fetch_leader_leo >= 0 {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.log_end_offset = fetch_offset;
        self.last_fetch_leader_leo = leader_leo;
        self.last_fetch_ms = now_ms;
    }

    /// Kafka's `isCaughtUp`: at the leader's end now, or caught up within the allowed lag.
    pub fn is_caught_up(&self, leader_leo: i64, now_ms: i64, max_lag_ms: i64) -> bool {
        self.log_end_offset == leader_leo || now_ms - self.last_caught_up_ms <= max_lag_ms
    }
}

/// The committed ISR plus a pending change's members: while a change is in flight, the high
/// watermark must be safe under either ISR (Kafka's "maximal ISR").
pub fn maximal_isr(isr: &[i32], pending: Option<&PendingIsr>) -> Vec<i32> {
    let mut out = isr.to_vec();
    if let Some(p) = pending {
        out.extend(p.isr.iter().filter(|r| !isr.contains(r)));
    }
    out
}

/// The high watermark the leader may expose: the smallest log end offset among the leader and
/// the followers in the maximal ISR, and also among eligible followers outside it that are
/// caught up (so a follower about to join is not left behind by a fast-moving watermark).
/// Followers that have not fetched yet count as offset -1, which holds the watermark where it
/// is. The caller only ever moves the watermark forward.
pub fn leader_high_watermark(
    leader: i32,
    leader_leo: i64,
    maximal_isr: &[i32],
    followers: &BTreeMap<i32, FollowerState>,
    eligible: &dyn Fn(i32) -> bool,
    now_ms: i64,
    max_lag_ms: i64,
) -> i64 {
    let mut hw = leader_leo;
    for (&id, f) in followers {
        if id == leader {
            continue;
        }
        let counts = maximal_isr.contains(&id)
            || (eligible(id) && f.is_caught_up(leader_leo, now_ms, max_lag_ms));
        if counts && f.log_end_offset < hw {
            hw = f.log_end_offset;
        }
    }
    hw
}

/// Kafka's `isFollowerInSync`: a follower joins the ISR once it has everything up to the high
/// watermark and everything the leader wrote before its current epoch began.
pub fn should_join_isr(follower: &FollowerState, leader_hw: i64, epoch_start_offset: i64) -> bool {
    follower.log_end_offset >= leader_hw && follower.log_end_offset >= epoch_start_offset
}

/// ISR members (other than the leader) that have not been caught up for longer than the lag
/// limit. A member the leader knows nothing about counts as out of sync.
pub fn out_of_sync_replicas(
    leader: i32,
    isr: &[i32],
    followers: &BTreeMap<i32, FollowerState>,
    leader_leo: i64,
    now_ms: i64,
    max_lag_ms: i64,
) -> Vec<i32> {
    isr.iter()
        .copied()
        .filter(|&id| id != leader)
        .filter(|id| {
            !followers
                .get(id)
                .is_some_and(|f| f.is_caught_up(leader_leo, now_ms, max_lag_ms))
        })
        .collect()
}

/// `isr` with `joining` added at the end.
pub fn expanded(isr: &[i32], joining: i32) -> Vec<i32> {
    let mut out = isr.to_vec();
    if !out.contains(&joining) {
        out.push(joining);
    }
    out
}

/// `isr` without `leaving`.
pub fn shrunk(isr: &[i32], leaving: &[i32]) -> Vec<i32> {
    isr.iter()
        .copied()
        .filter(|r| !leaving.contains(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 10_000;

    fn follower(leo: i64, caught_up: i64) -> FollowerState {
        FollowerState {
            log_end_offset: leo,
            last_caught_up_ms: caught_up,
            last_fetch_leader_leo: leo,
            last_fetch_ms: caught_up,
        }
    }

    fn all(_: i32) -> bool {
        true
    }

    #[test]
    fn fetches_decide_when_a_follower_was_last_caught_up() {
        let mut f = FollowerState::at_leadership(false, 1_000);
        assert!(
            !f.is_caught_up(10, 1_000, LAG),
            "outside the ISR: never caught up yet"
        );
        // Behind the leader's end, and no earlier fetch to compare with.
        f.record_fetch(5, 10, 2_000);
        assert_eq!((f.log_end_offset, f.last_caught_up_ms), (5, NEVER_MS));
        // Reached the end the leader had at the previous fetch: caught up as of that fetch.
        f.record_fetch(10, 15, 3_000);
        assert_eq!(f.last_caught_up_ms, 2_000);
        // At the leader's end: caught up now.
        f.record_fetch(15, 15, 4_000);
        assert_eq!(f.last_caught_up_ms, 4_000);
        assert!(
            f.is_caught_up(15, 100_000, LAG),
            "at the end means caught up"
        );
        assert!(f.is_caught_up(20, 4_000 + LAG, LAG));
        assert!(!f.is_caught_up(20, 4_001 + LAG, LAG));
        // In-sync followers get a grace period when leadership starts.
        let f = FollowerState::at_leadership(true, 50_000);
        assert!(f.is_caught_up(100, 50_000 + LAG, LAG));
        assert!(!f.is_caught_up(100, 50_001 + LAG, LAG));
    }

    #[test]
    fn high_watermark_is_the_minimum_over_the_maximal_isr() {
        let followers: BTreeMap<i32, FollowerState> =
            [(1, follower(7, 0)), (2, follower(4, 0))].into();
        // Long after either follower was last caught up.
        let now = 100_000;
        let hw = |isr: &[i32], pending: Option<&PendingIsr>| {
            leader_high_watermark(
                0,
                10,
                &maximal_isr(isr, pending),
                &followers,
                &all,
                now,
                LAG,
            )
        };
        assert_eq!(hw(&[0], None), 10, "alone in the ISR: the leader's end");
        assert_eq!(hw(&[0, 1], None), 7);
        assert_eq!(hw(&[0, 1, 2], None), 4);
        // A pending shrink of 2 does not count until committed; nor does a pending expansion.
        let shrink = PendingIsr {
            isr: vec![0, 1],
            sent_at_ms: 0,
        };
        assert_eq!(hw(&[0, 1, 2], Some(&shrink)), 4);
        let expand = PendingIsr {
            isr: vec![0, 1, 2],
            sent_at_ms: 0,
        };
        assert_eq!(hw(&[0, 1], Some(&expand)), 4);
        // A follower that never fetched holds the watermark (-1 is below anything).
        let fresh: BTreeMap<i32, FollowerState> =
            [(1, FollowerState::at_leadership(true, 0))].into();
        assert_eq!(
            leader_high_watermark(0, 10, &[0, 1], &fresh, &all, 0, LAG),
            UNKNOWN_OFFSET
        );
    }

    #[test]
    fn a_caught_up_eligible_follower_outside_the_isr_holds_the_watermark() {
        let now = 100_000;
        let followers: BTreeMap<i32, FollowerState> =
            [(1, follower(10, 0)), (2, follower(8, now - 100))].into();
        assert_eq!(
            leader_high_watermark(0, 10, &[0, 1], &followers, &all, now, LAG),
            8
        );
        let only_1 = |id: i32| id == 1;
        assert_eq!(
            leader_high_watermark(0, 10, &[0, 1], &followers, &only_1, now, LAG),
            10,
            "an ineligible (fenced) broker is not waited for"
        );
        let stale: BTreeMap<i32, FollowerState> =
            [(1, follower(10, 0)), (2, follower(8, 0))].into();
        assert_eq!(
            leader_high_watermark(0, 10, &[0, 1], &stale, &all, now, LAG),
            10,
            "a lagging follower outside the ISR is not waited for"
        );
    }

    #[test]
    fn joining_needs_the_high_watermark_and_the_epoch_start() {
        assert!(should_join_isr(&follower(10, 0), 10, 8));
        assert!(!should_join_isr(&follower(9, 0), 10, 8));
        assert!(
            !should_join_isr(&follower(10, 0), 5, 12),
            "must have what the leader wrote before its epoch"
        );
        assert_eq!(expanded(&[0, 1], 2), vec![0, 1, 2]);
        assert_eq!(expanded(&[0, 1], 1), vec![0, 1]);
    }

    #[test]
    fn lagging_isr_members_are_out_of_sync() {
        let now = 50_000;
        let followers: BTreeMap<i32, FollowerState> = [
            (1, follower(100, now - 1_000)),
            (2, follower(60, now - LAG - 1)),
            (3, follower(100, 0)),
        ]
        .into();
        assert_eq!(
            out_of_sync_replicas(0, &[0, 1, 2, 3, 4], &followers, 100, now, LAG),
            vec![2, 4],
            "3 is at the end; 4 is unknown"
        );
        assert_eq!(shrunk(&[0, 1, 2, 3], &[2, 4]), vec![0, 1, 3]);
    }
}
