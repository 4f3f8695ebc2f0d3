//! Alert delivery behind the dataflow: one thread and a bounded queue per channel.
//!
//! The coordinator hands each epoch's alerts to every channel with
//! [`Notifier::send`], which never blocks: a full queue drops the batch,
//! counted and logged (`outcome="dropped"`). The channel's thread delivers
//! batches in order, retrying a failure with exponential backoff (0.2 s,
//! doubling, at most 10 s between attempts) up to the channel's attempts;
//! a batch that still fails is counted and logged with the alerts it carried.
//! Dropping the notifier lets the thread finish what is queued (for at most
//! 30 s), so a `--once` run delivers its last alerts before exiting.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use millrace_operators::monitor::Alert;
use tracing::{error, warn};

/// A delivery channel (webhook, email).
pub trait Delivery: Send + 'static {
    /// The channel's name (a metric label).
    fn name(&self) -> &'static str;
    /// Attempts per batch.
    fn attempts(&self) -> u32;
    /// Why a delivery failed (retried, then logged).
    type Error: std::fmt::Display;
    /// Delivers one batch, or says why not.
    fn deliver(&mut self, alerts: &[Alert]) -> Result<(), Self::Error>;
}

/// At most `per_hour` alerts per rule (and group) reach the channels in any hour of processing time.
#[derive(Debug, Default)]
pub struct RateLimit {
    per_hour: usize,
    sent: std::collections::HashMap<String, std::collections::VecDeque<i64>>,
    /// Rules over their limit whose holding back has been logged.
    held: std::collections::HashSet<String>,
}

impl RateLimit {
    /// A limit of `per_hour` alerts per rule.
    pub fn new(per_hour: u32) -> Self {
        RateLimit {
            per_hour: per_hour as usize,
            sent: Default::default(),
            held: Default::default(),
        }
    }

    /// The alerts that may go out at `now_ms`; the others are counted and logged (they stay in the lake).
    pub fn admit(&mut self, alerts: &[Alert], now_ms: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in alerts {
            let key = match &a.group {
                Some(g) => format!("{}[{g}]", a.rule_id),
                None => a.rule_id.clone(),
            };
            let q = self.sent.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| now_ms - t >= 3_600_000) {
                q.pop_front();
            }
            if q.len() < self.per_hour {
                q.push_back(now_ms);
                self.held.remove(&key);
                out.push(a.clone());
            } else {
                metrics::counter!(crate::core::metrics::ALERTS_RATE_LIMITED, "rule" => a.rule_id.clone())
                    .increment(1);
                // Said once when the rule reaches its limit, not for every alert held back.
                if self.held.insert(key.clone()) {
                    tracing::warn!(rule_id = %key, message = %a.message, "Alerts of this rule are no longer sent to the channels this hour: more than max_per_rule_per_hour (they are in the lake; millrace_alerts_rate_limited_total counts them).");
                }
            }
        }
        out
    }
}

/// A channel's queue and thread.
pub struct Notifier {
    name: &'static str,
    queue: Option<SyncSender<Vec<Alert>>>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    /// Starts the channel's thread.
    pub fn start(mut channel: impl Delivery) -> Notifier {
        let name = channel.name();
        let (queue, rx) = sync_channel::<Vec<Alert>>(256);
        let thread = std::thread::Builder::new()
            .name(format!("millrace-alerts-{name}"))
            .spawn(move || {
                for batch in rx {
                    let mut wait = Duration::from_millis(200);
                    let attempts = channel.attempts();
                    for attempt in 1..=attempts {
                        match channel.deliver(&batch) {
                            Ok(()) => {
                                metrics::counter!(crate::core::metrics::ALERT_DELIVERIES, "channel" => name, "outcome" => "delivered").increment(1);
                                tracing::info!(channel = name, alerts = batch.len(), attempt, "Delivered alerts.");
                                break;
                            }
                            Err(e) if attempt < attempts => {
                                metrics::counter!(crate::core::metrics::ALERT_DELIVERIES, "channel" => name, "outcome" => "retried").increment(1);
                                warn!(channel = name, attempt, %e, "Alert delivery failed; retrying.");
                                std::thread::sleep(wait);
                                wait = (wait * 2).min(Duration::from_secs(10));
                            }
                            Err(e) => {
                                metrics::counter!(crate::core::metrics::ALERT_DELIVERIES, "channel" => name, "outcome" => "failed").increment(1);
                                let rules: Vec<String> = batch.iter().map(|a| format!("{}:{:?}", a.rule_id, a.state)).collect();
                                error!(channel = name, attempts, %e, alerts = ?rules, "Alert delivery failed for good; the alerts are in the lake's alerts table.");
                            }
                        }
                    }
                }
            })
            .expect("the alert thread starts");
        Notifier {
            name,
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    /// Queues a batch; never blocks.
    pub fn send(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        if let Some(q) = &self.queue {
            if let Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) =
                q.try_send(alerts.to_vec())
            {
                metrics::counter!(crate::core::metrics::ALERT_DELIVERIES, "channel" => self.name, "outcome" => "dropped").increment(1);
                error!(channel = self.name, alerts = batch.len(), "Alert queue full; dropping a batch (the alerts are in the lake's alerts table).");
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                warn!(
                    channel = self.name,
                    "Alert deliveries still pending at exit."
                );
            }
        }
    }
}

/// The alert channels a topology names (`[alerts.webhook]`, `[alerts.email]`, `[alerts.kafka]`).
pub struct Channels<'a> {
    /// `[alerts.webhook]`.
    pub webhook: Option<&'a crate::connectors::webhook::WebhookSpec>,
    /// `[alerts.email]`.
    pub email: Option<&'a crate::connectors::email::EmailSpec>,
    /// `[alerts.kafka]`.
    pub kafka: Option<&'a crate::connectors::kafka_alerts::KafkaAlertsSpec>,
}

/// Starts a thread per configured channel; `kafka_brokers` (the Kafka
/// source's) serve `[alerts.kafka]` when it names none. Each channel was
/// built once when the topology was checked; building it again cannot fail
/// unless its environment changed in between (a CA file removed): that
/// raises a fault with the reason instead of a panic.
pub fn start_channels(
    channels: Channels<'_>,
    kafka_brokers: Option<&str>,
    fault: &crate::core::fault::Fault,
) -> Vec<Notifier> {
    let mut out = Vec::new();
    if let Some(spec) = channels.webhook {
        match crate::connectors::webhook::Webhook::new(spec.clone()) {
            Ok(channel) => out.push(Notifier::start(channel)),
            Err(e) => fault.raise(format!("alerts.webhook: {e}")),
        }
    }
    if let Some(spec) = channels.email {
        match crate::connectors::email::Email::new(spec.clone()) {
            Ok(channel) => out.push(Notifier::start(channel)),
            Err(e) => fault.raise(format!("alerts.email: {e}")),
        }
    }
    if let Some(spec) = channels.kafka {
        match spec.brokers.as_deref().or(kafka_brokers) {
            Some(brokers) => match crate::connectors::kafka_alerts::KafkaAlerts::new(spec, brokers)
            {
                Ok(channel) => out.push(Notifier::start(channel)),
                Err(e) => fault.raise(format!("alerts.kafka: {e}")),
            },
            None => fault
                .raise("alerts.kafka: no `brokers` and no Kafka source to take them from".into()),
        }
    }
    out
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use millrace_operators::monitor::{AlertState, MonitorKind, Severity};

    fn alert(rule: &str) -> Alert {
        Alert {
            rule_id: rule.into(),
            kind: MonitorKind::Volume,
            group: None,
            severity: Severity::Warning,
            state: AlertState::Firing,
            window_start_ms: 0,
            window_end_ms: 0,
            observed: 1.0,
            expected: None,
            score: 1.0,
            message: String::new(),
            epoch: 0,
        }
    }

    #[test]
    fn at_most_n_per_rule_per_hour_reach_the_channels() {
        let mut r = RateLimit::new(2);
        let flapping: Vec<Alert> = (0..5).map(|_| alert("volume")).collect();
        assert_eq!(r.admit(&flapping, 0).len(), 2);
        assert_eq!(
            r.admit(&[alert("other")], 1).len(),
            1,
            "limits are per rule"
        );
        assert_eq!(r.admit(&[alert("volume")], 3_599_999).len(), 0);
        assert_eq!(
            r.admit(&[alert("volume")], 3_600_000).len(),
            1,
            "an hour later the first ones have aged out"
        );
    }
}
