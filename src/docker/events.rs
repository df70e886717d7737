//! The engine's event stream for one project's containers, kept alive across engine
//! restarts.
//!
//! [`watch`] subscribes to `/events` filtered by the project's labels and forwards
//! what matters (start, die, kill, stop, destroy) as [`Event`]s. When the stream ends
//! or fails — dockerd restarted or stopped (PITFALLS 25, bollard#514) — it says so
//! ([`Event::Disconnected`]), reconnects with exponential backoff, and says
//! [`Event::Connected`] again, after which the receiver must re-inspect: events that
//! happened while nobody listened are lost.
//!
//! This module knows nothing of routes or restarts; the supervisor decides.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::EventMessageTypeEnum;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Role;
use super::spec::{LABEL_MANAGED, LABEL_PROJECT, LABEL_ROLE};
use crate::config::up::Project;

/// What happened to one of the project's containers, or to the engine connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Subscribed (first time or again): re-inspect, events may have been missed.
    Connected,
    /// The stream ended or could not be opened; reconnecting.
    Disconnected(String),
    Container {
        role: Role,
        /// The container's name at the time of the event.
        name: String,
        id: String,
        action: Action,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    /// The process ended (crash, kill, stop); Docker's exit code when given.
    Die(Option<i64>),
    /// `docker kill` (or the kill part of `docker stop`).
    Kill,
    /// `docker stop` finished: a deliberate stop.
    Stop,
    Destroy,
}

impl Action {
    /// Docker's action name; None for the ones nobody here needs.
    pub fn parse(action: &str, exit_code: Option<&str>) -> Option<Action> {
        Some(match action {
            "start" => Action::Start,
            "die" => Action::Die(exit_code.and_then(|c| c.parse().ok())),
            "kill" => Action::Kill,
            "stop" => Action::Stop,
            "destroy" => Action::Destroy,
            _ => return None,
        })
    }
}

/// The filter: the project's managed containers only.
pub fn filters(project: &Project) -> HashMap<String, Vec<String>> {
    let mut f = HashMap::new();
    f.insert("type".to_string(), vec!["container".to_string()]);
    f.insert(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_PROJECT}={}", project.key()),
        ],
    );
    f
}

/// Backoff between reconnection attempts: 0.5 s doubling up to 10 s.
pub fn reconnect_delay(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(5));
    Duration::from_millis(ms.min(10_000))
}

/// Forwards the project's container events to `tx` until `cancel` (or until the
/// receiver is gone), reconnecting whenever the stream breaks.
pub async fn watch(project: Project, tx: mpsc::Sender<Event>, cancel: CancellationToken) {
    let mut attempt = 0u32;
    loop {
        let docker = tokio::select! {
            _ = cancel.cancelled() => return,
            d = super::connect() => d,
        };
        let reason = match docker {
            Err(e) => format!("{e:#}"),
            Ok(docker) => {
                let opts = EventsOptions {
                    filters: Some(filters(&project)),
                    ..Default::default()
                };
                let mut stream = docker.events(Some(opts));
                // The subscription is live once the engine answered; `Connected` is
                // sent before the first event so the receiver re-inspects first.
                if tx.send(Event::Connected).await.is_err() {
                    return;
                }
                attempt = 0;
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        n = stream.next() => n,
                    };
                    match next {
                        None => break "the Docker engine closed the event stream".to_string(),
                        Some(Err(e)) => break format!("Docker event stream: {e}"),
                        Some(Ok(msg)) => {
                            if msg.typ != Some(EventMessageTypeEnum::CONTAINER) {
                                continue;
                            }
                            let Some(actor) = msg.actor else { continue };
                            let attrs = actor.attributes.unwrap_or_default();
                            let role = attrs.get(LABEL_ROLE).and_then(|r| Role::parse(r));
                            let action = msg.action.as_deref().and_then(|a| {
                                Action::parse(a, attrs.get("exitCode").map(String::as_str))
                            });
                            let name = attrs.get("name").cloned().unwrap_or_default();
                            if let (Some(role), Some(action), Some(id)) = (role, action, actor.id)
                                && tx
                                    .send(Event::Container {
                                        role,
                                        name,
                                        id,
                                        action,
                                    })
                                    .await
                                    .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }
        };
        if tx.send(Event::Disconnected(reason)).await.is_err() {
            return;
        }
        let delay = reconnect_delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert_eq!(
            Action::parse("die", Some("137")),
            Some(Action::Die(Some(137)))
        );
        assert_eq!(Action::parse("die", None), Some(Action::Die(None)));
        assert_eq!(Action::parse("start", None), Some(Action::Start));
        assert_eq!(Action::parse("exec_start: sh", None), None);
    }

    #[test]
    fn reconnect_backoff_is_bounded() {
        assert_eq!(reconnect_delay(0), Duration::from_millis(500));
        assert_eq!(reconnect_delay(1), Duration::from_secs(1));
        assert_eq!(reconnect_delay(40), Duration::from_secs(10));
    }

    #[test]
    fn filter_names_the_project() {
        let f = filters(&Project::named("t-x").unwrap());
        assert_eq!(f["type"], vec!["container"]);
        assert!(f["label"].contains(&"webui.project=t-x".to_string()));
    }
}
