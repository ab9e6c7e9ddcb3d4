//! Publishing Events, one series per distinct message.
//!
//! kube's `Recorder` keys its series by type, reason, action and object, not by note: after
//! scaling 3 -> 4, 4 -> 5 and 5 -> 3 a cluster showed one Event "brokers 3 -> 4 (x3)". Here each
//! distinct note has a recorder of its own, so a repeated message still becomes a series and a
//! new message a new Event.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

/// Most distinct notes remembered; past it the memory starts again (a repeat then opens a new
/// series instead of counting on, which loses nothing).
const MAX_NOTES: usize = 512;

/// Longest note published (the API server rejects notes over 1 kB).
const MAX_NOTE_BYTES: usize = 1000;

/// Publishes Events about the operator's objects.
pub struct EventPublisher {
    client: kube::Client,
    reporter: Reporter,
    by_note: Mutex<HashMap<String, Recorder>>,
}

impl EventPublisher {
    /// A publisher reporting as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        EventPublisher {
            client,
            reporter,
            by_note: Mutex::default(),
        }
    }

    fn recorder(&self, note: &str) -> Recorder {
        let mut by_note = self.by_note.lock().unwrap_or_else(|e| e.into_inner());
        if by_note.len() >= MAX_NOTES && !by_note.contains_key(note) {
            by_note.clear();
        }
        by_note
            .entry(note.to_string())
            .or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone()))
            .clone()
    }

    /// Publish an Event about `reference`. Best effort: a failure is logged, never fails the
    /// reconcile.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = truncate(note, MAX_NOTE_BYTES);
        let recorder = self.recorder(&note);
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        match recorder.publish(&event, reference).await {
            Ok(()) => {}
            // The namespace is going away, and its Events with it.
            Err(e) if super::is_namespace_terminating(&e) => {
                debug!(reason, "namespace terminating: event dropped")
            }
            Err(e) => warn!(reason, error = %e, "cannot publish event"),
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo".to_string(), 2), "h");
        assert_eq!(truncate("abc".to_string(), 10), "abc");
    }
}
