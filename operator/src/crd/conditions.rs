//! Status conditions (`metav1.Condition`) with stable transition times.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `True` / `False` / `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// It cannot be told.
    Unknown,
}

impl ConditionStatus {
    /// `True` for true, `False` for false.
    pub fn from_bool(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A condition observed now for `generation`.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The conditions to write: `new`, each keeping the `lastTransitionTime` of the same
/// condition in `old` when its status did not change (so the time says when it last
/// flipped, not when the operator last looked).
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.iter().find(|o| o.type_ == c.type_) {
                if prev.status == c.status {
                    c.last_transition_time = prev.last_transition_time.clone();
                }
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let old = vec![
            condition("Ready", ConditionStatus::True, "A", "", Some(1), ts(100)),
            condition(
                "Degraded",
                ConditionStatus::False,
                "B",
                "",
                Some(1),
                ts(100),
            ),
        ];
        let new = vec![
            condition("Ready", ConditionStatus::True, "A2", "m", Some(2), ts(200)),
            condition("Degraded", ConditionStatus::True, "C", "", Some(2), ts(200)),
            condition(
                "Progressing",
                ConditionStatus::False,
                "D",
                "",
                Some(2),
                ts(200),
            ),
        ];
        let merged = merge_conditions(&old, new);
        assert_eq!(merged[0].last_transition_time, Time(ts(100)));
        assert_eq!(
            merged[0].reason, "A2",
            "reason and message are the new ones"
        );
        assert_eq!(merged[0].observed_generation, Some(2));
        assert_eq!(
            merged[1].last_transition_time,
            Time(ts(200)),
            "status flipped"
        );
        assert_eq!(
            merged[2].last_transition_time,
            Time(ts(200)),
            "new condition"
        );
        assert_eq!(merged[2].status, "False");
    }
}
