//! The webhook receiver of `smsgw bench --webhook-listen`: an HTTP server
//! the load tool runs next to its load, set as the bench app's webhook
//! (final events only, batched unless `--webhook-single`), that counts the
//! `delivered` events it receives and how long each took to arrive after
//! its receipt was applied (the event's `at_ms`). It measures what a
//! client of the notification outbox gets: end-to-end throughput with a
//! webhook, and the outbox's delivery latency (issue 18's benchmark).

use anyhow::{Context, bail};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the receiver saw.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// `delivered` events, each event id counted once.
    pub(crate) delivered: AtomicU64,
    /// Events whose id had arrived before (at-least-once redelivery).
    pub(crate) repeated: AtomicU64,
    /// HTTP requests (batches) received.
    pub(crate) requests: AtomicU64,
    /// Event ids seen, and each delivered event's latency after its
    /// receipt (ms).
    seen: Mutex<(HashSet<String>, Vec<u64>)>,
}

impl Received {
    /// Counts the events of one request body (a JSON object, or an array
    /// of them), received at `now_ms`.
    fn take(&self, body: &[u8], now_ms: u64) -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let events = match v {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            let id = ev["event_id"].as_str().ok_or("an event without event_id")?;
            if !seen.0.insert(id.to_owned()) {
                self.repeated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if ev["status"] == "delivered" {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let at = ev["at_ms"].as_u64().ok_or("a status event without at_ms")?;
                seen.1.push(now_ms.saturating_sub(at));
            }
        }
        Ok(())
    }

    /// Latency percentiles (ms) of the delivered events: p50, p90, p99, max.
    pub(crate) fn latency(&self) -> [u64; 4] {
        let mut l = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        l.sort_unstable();
        let pct = |p: f64| crate::bench::percentile(&l, p);
        [pct(0.5), pct(0.9), pct(0.99), pct(1.0)]
    }
}

/// Serves the receiver on `listen` until the process ends; answers 200 to
/// every readable body, 400 to others. Returns the counters and the URL
/// to set as the webhook.
pub(crate) async fn serve(listen: SocketAddr) -> anyhow::Result<(Arc<Received>, String)> {
    let received = Arc::new(Received::default());
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                match r.take(&body, smsgw_core::messages::unix_now_ms()) {
                    Ok(()) => axum::http::StatusCode::OK,
                    Err(e) => {
                        eprintln!("webhook receiver: {e}");
                        axum::http::StatusCode::BAD_REQUEST
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the webhook"))?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((received, url))
}

/// Sets (`Some(url)`) or removes (`None`) the bench app's webhook:
/// final events only, batched unless `single`.
pub(crate) async fn set(
    http: &reqwest::Client,
    rest: &str,
    token: &str,
    app_id: &str,
    url: Option<&str>,
    single: bool,
) -> anyhow::Result<()> {
    let resp = http
        .put(format!("{rest}/api/v1/settings/webhook"))
        .bearer_auth(token)
        .header("x-app-id", app_id)
        .json(&serde_json::json!({"url": url, "batch": !single, "events": ["final"]}))
        .send()
        .await
        .context("cannot set the webhook")?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "setting the webhook answered {status}: {} (a loopback receiver needs the gateway's --webhook-allow-private)",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_delivered_event_once_with_its_latency() {
        let r = Received::default();
        let batch = br#"[{"type":"status","status":"delivered","at_ms":1000,"event_id":"a"},
                         {"type":"status","status":"failed","at_ms":1000,"event_id":"b"},
                         {"type":"status","status":"delivered","at_ms":1040,"event_id":"c"}]"#;
        r.take(batch, 1050).unwrap();
        // The same event again (a retried batch) is counted as repeated.
        r.take(
            br#"{"type":"status","status":"delivered","at_ms":1000,"event_id":"a"}"#,
            1100,
        )
        .unwrap();
        assert_eq!(r.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(r.repeated.load(Ordering::Relaxed), 1);
        assert_eq!(r.requests.load(Ordering::Relaxed), 2);
        assert_eq!(r.latency(), [50, 50, 50, 50]);
        assert!(r.take(b"[{\"status\":\"delivered\"}]", 0).is_err());
        assert!(r.take(b"nope", 0).is_err());
    }
}
