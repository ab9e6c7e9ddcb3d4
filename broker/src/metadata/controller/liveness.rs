//! Heartbeat bookkeeping on the controller: when each broker was last heard from. Time is
//! passed in, so the rules are tested without waiting.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub struct Liveness {
    session_timeout: Duration,
    last_seen: HashMap<i32, Instant>,
    /// Brokers in controlled shutdown: their heartbeats must not unfence them again.
    shutting_down: BTreeSet<i32>,
}

impl Liveness {
    pub fn new(session_timeout: Duration) -> Liveness {
        Liveness {
            session_timeout,
            last_seen: HashMap::new(),
            shutting_down: BTreeSet::new(),
        }
    }

    /// Records a heartbeat; returns whether the broker is shutting down.
    pub fn seen(&mut self, id: i32, now: Instant) -> bool {
        self.last_seen.insert(id, now);
        self.shutting_down.contains(&id)
    }

    /// A (re)started broker registered: a new process, not the one that was shutting down.
    pub fn registered(&mut self, id: i32, now: Instant) {
        self.shutting_down.remove(&id);
        self.last_seen.insert(id, now);
    }

    pub fn shutting_down(&mut self, id: i32) {
        self.shutting_down.insert(id);
    }

    pub fn forget(&mut self, id: i32) {
        self.last_seen.remove(&id);
        self.shutting_down.remove(&id);
    }

    /// A new controller starts every broker's session afresh.
    pub fn reset(&mut self, ids: impl Iterator<Item = i32>, now: Instant) {
        self.last_seen = ids.map(|id| (id, now)).collect();
        self.shutting_down.clear();
    }

    /// The given (unfenced) brokers whose last heartbeat is older than the session timeout.
    pub fn expired(&mut self, unfenced: impl Iterator<Item = i32>, now: Instant) -> Vec<i32> {
        unfenced
            .filter(|id| {
                let last = *self.last_seen.entry(*id).or_insert(now);
                now.duration_since(last) > self.session_timeout
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_expire_after_the_session_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_millis(100));
        l.reset([0, 1].into_iter(), t0);
        assert!(l
            .expired([0, 1].into_iter(), t0 + Duration::from_millis(50))
            .is_empty());
        l.seen(1, t0 + Duration::from_millis(90));
        assert_eq!(
            l.expired([0, 1].into_iter(), t0 + Duration::from_millis(150)),
            vec![0]
        );
        // A broker never heard from starts its session when first considered.
        assert!(l
            .expired([5].into_iter(), t0 + Duration::from_millis(150))
            .is_empty());
        l.shutting_down(1);
        assert!(l.seen(1, t0), "heartbeats report the shutdown");
        l.registered(1, t0);
        assert!(!l.seen(1, t0), "a restarted broker is not shutting down");
    }
}
