//! Alert delivery: the controller leader's monitor posts alert changes to a
//! Prometheus Alertmanager (v2 API, `POST {url}/api/v2/alerts`) and/or a
//! generic JSON webhook.
//!
//! Delivery must never slow the monitor down, so the monitor only hands a
//! batch to a bounded queue per receiver ([`Delivery::send`] never waits);
//! one task per receiver drains its queue, posting with a per-request
//! timeout and a few retries with backoff, so a dead receiver holds up
//! neither the monitor nor the other receiver. When a receiver is dead its
//! queue fills and further batches for it are dropped and counted — the
//! monitor re-sends every firing alert periodically anyway (Alertmanager
//! resolves an alert it has not heard of for its `resolve_timeout`), so a
//! receiver that comes back catches up within one re-send period.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

/// How many batches may wait for one receiver before new ones are dropped.
const QUEUE: usize = 64;
/// One POST's budget.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per batch and receiver; the waits between them double from this.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// One alert in the Alertmanager v2 shape (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutgoingAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// Set (in the past) on a resolved alert; absent while it fires.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl OutgoingAlert {
    fn status(&self) -> &'static str {
        if self.ends_at.is_some() {
            "resolved"
        } else {
            "firing"
        }
    }
}

/// Where alerts go.
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    /// Base URL of an Alertmanager (e.g. `http://127.0.0.1:9093`).
    pub alertmanager: Option<String>,
    /// A URL that receives `{"source", "node", "alerts": [...]}` JSON.
    pub webhook: Option<String>,
}

impl Receivers {
    pub fn is_empty(&self) -> bool {
        self.alertmanager.is_none() && self.webhook.is_none()
    }
}

/// Delivery outcomes per receiver kind, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    pub alertmanager_ok: AtomicU64,
    pub alertmanager_failed: AtomicU64,
    pub webhook_ok: AtomicU64,
    pub webhook_failed: AtomicU64,
    /// Batches dropped because the queue was full (receivers too slow or dead).
    pub dropped: AtomicU64,
}

/// The kinds of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Alertmanager,
    Webhook,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// One queue per receiver.
    queues: Vec<(Kind, mpsc::Sender<Vec<OutgoingAlert>>)>,
    pub counters: Arc<DeliveryCounters>,
}

impl Delivery {
    /// Starts one delivery task per receiver (none without receivers).
    pub fn start(receivers: Receivers, node: u64, http: reqwest::Client) -> Delivery {
        let counters = Arc::new(DeliveryCounters::default());
        let targets = [
            (
                Kind::Alertmanager,
                receivers
                    .alertmanager
                    .map(|base| format!("{}/api/v2/alerts", base.trim_end_matches('/'))),
            ),
            (Kind::Webhook, receivers.webhook),
        ];
        let queues = targets
            .into_iter()
            .filter_map(|(kind, url)| {
                let url = url?;
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(kind, url, node, http.clone(), rx, counters.clone()));
                Some((kind, tx))
            })
            .collect();
        Delivery { queues, counters }
    }

    /// Queues `alerts` for every receiver without waiting.
    pub fn send(&self, alerts: Vec<OutgoingAlert>) {
        if alerts.is_empty() {
            return;
        }
        for (kind, tx) in &self.queues {
            if tx.try_send(alerts.clone()).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    receiver = ?kind,
                    "an alert receiver is not keeping up; an alert batch for it was dropped"
                );
            }
        }
    }

    pub fn enabled(&self) -> bool {
        !self.queues.is_empty()
    }
}

async fn run(
    kind: Kind,
    url: String,
    node: u64,
    http: reqwest::Client,
    mut rx: mpsc::Receiver<Vec<OutgoingAlert>>,
    counters: Arc<DeliveryCounters>,
) {
    while let Some(alerts) = rx.recv().await {
        let (body, ok, failed) = match kind {
            Kind::Alertmanager => (
                serde_json::to_value(&alerts).unwrap_or_default(),
                &counters.alertmanager_ok,
                &counters.alertmanager_failed,
            ),
            Kind::Webhook => (
                webhook_body(node, &alerts),
                &counters.webhook_ok,
                &counters.webhook_failed,
            ),
        };
        let c = if post_with_retries(&http, &url, &body).await {
            ok
        } else {
            failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The generic webhook's payload: the alerts with their status spelled out.
pub fn webhook_body(node: u64, alerts: &[OutgoingAlert]) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["status"] = a.status().into();
            v
        })
        .collect();
    serde_json::json!({ "source": "cairn", "node": node, "alerts": alerts })
}

async fn post_with_retries(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> bool {
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let result = http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .json(body)
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(url, %status, body = %text, attempt, "alert receiver refused");
                // A 4xx will not get better by retrying.
                if status.is_client_error() {
                    return false;
                }
            }
            Err(e) => tracing::warn!(url, error = %e, attempt, "alert receiver unreachable"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> OutgoingAlert {
        OutgoingAlert {
            labels: [("alertname".to_string(), "CairnSlowDisk".to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: "2026-12-03T05:00:00Z".into(),
            ends_at: None,
            generator_url: "http://127.0.0.1:7070/v1/monitor/alerts".into(),
        }
    }

    #[tokio::test]
    async fn given_a_hung_receiver_when_alerts_are_sent_should_hold_up_neither_the_sender_nor_the_other_receiver()
     {
        // Bound but never accepting: connections complete in the kernel's
        // backlog and the request is never answered, the worst receiver.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let got = Arc::new(parking_lot::Mutex::new(Vec::<serde_json::Value>::new()));
        let app = {
            let got = got.clone();
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                    got.lock().push(v);
                    async { axum::http::StatusCode::OK }
                }),
            )
        };
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(live, app).await });
        let d = Delivery::start(
            Receivers {
                alertmanager: Some(format!("http://{}", hung.local_addr().unwrap())),
                webhook: Some(format!("http://{live_addr}/hook")),
            },
            1,
            cairn_client::http_client(),
        );
        let start = std::time::Instant::now();
        for _ in 0..QUEUE + 10 {
            d.send(vec![alert()]);
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "send never waits"
        );
        assert!(
            d.counters.dropped.load(Ordering::Relaxed) >= 9,
            "full queues drop"
        );
        // The webhook is served while the hung receiver's first POST has
        // not even timed out yet (2 s).
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        while got.lock().is_empty() {
            assert!(std::time::Instant::now() < deadline, "webhook starved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(got.lock()[0]["alerts"][0]["status"], "firing");
        assert_eq!(d.counters.alertmanager_ok.load(Ordering::Relaxed), 0);
        server.abort();
    }

    #[test]
    fn resolved_alerts_say_so_in_the_webhook_and_carry_ends_at_for_alertmanager() {
        let mut a = OutgoingAlert {
            labels: [("alertname".to_string(), "CairnSlowDisk".to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: "2026-12-03T05:00:00Z".into(),
            ends_at: None,
            generator_url: "http://127.0.0.1:7070/v1/monitor/alerts".into(),
        };
        let firing = serde_json::to_value(&a).unwrap();
        assert!(firing.get("endsAt").is_none());
        assert_eq!(firing["startsAt"], "2026-12-03T05:00:00Z");
        a.ends_at = Some("2026-12-03T05:01:00Z".into());
        let body = webhook_body(2, &[a]);
        assert_eq!(body["alerts"][0]["status"], "resolved");
        assert_eq!(body["node"], 2);
    }
}
