//! Alert delivery to webhooks: each new alert is POSTed as JSON to every
//! configured URL, signed with HMAC-SHA256 over `"<timestamp>.<body>"` in the
//! header `X-Darkscope-Signature: sha256=<hex>` (timestamp in
//! `X-Darkscope-Timestamp`, Unix seconds), so receivers can check origin and
//! freshness. Delivery runs on its own task with a bounded queue: it never
//! blocks detection or ingest; a full queue drops and counts. Failures are
//! retried with exponential backoff (0.5 s doubling, 6 attempts) and counted
//! in `/metrics`.

use crate::metrics::Metrics;
use crate::store::Alert;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One receiver.
#[derive(Clone)]
pub struct Webhook {
    /// URL to POST to.
    pub url: String,
    /// Shared secret for the signature (never logged).
    pub secret: Vec<u8>,
}

/// Attempts per alert and receiver.
const ATTEMPTS: u32 = 6;

/// The signature header value for `body` sent at `ts` (Unix seconds).
pub fn sign(secret: &[u8], ts: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Starts the delivery task; returns the queue that takes new alerts.
pub fn spawn(hooks: Vec<Webhook>, metrics: Arc<Metrics>) -> mpsc::Sender<Alert> {
    let (tx, mut rx) = mpsc::channel::<Alert>(1024);
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                log::error!("webhooks disabled: cannot build the HTTP client: {e}");
                return;
            }
        };
        while let Some(alert) = rx.recv().await {
            let body =
                match serde_json::to_vec(&serde_json::json!({ "type": "alert", "alert": alert })) {
                    Ok(b) => b,
                    Err(_) => continue,
                };
            for h in &hooks {
                deliver(&client, h, &body, &metrics).await;
            }
        }
    });
    tx
}

async fn deliver(client: &reqwest::Client, h: &Webhook, body: &[u8], metrics: &Metrics) {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let ts = darkscope_common::Timestamp::now().secs();
        let r = client
            .post(&h.url)
            .header("Content-Type", "application/json")
            .header("X-Darkscope-Timestamp", ts.to_string())
            .header("X-Darkscope-Signature", sign(&h.secret, ts, body))
            .body(body.to_vec())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                metrics.webhooks_delivered.fetch_add(1, Relaxed);
                return;
            }
            Ok(resp) => log::warn!(
                "webhook {} answered {} (attempt {attempt}/{ATTEMPTS})",
                h.url,
                resp.status()
            ),
            Err(e) => log::warn!(
                "webhook {} failed: {e} (attempt {attempt}/{ATTEMPTS})",
                h.url
            ),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
    metrics.webhooks_failed.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key/data, prefixed as the scheme does.
        let s = sign(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert_ne!(
            s,
            sign(b"Jefe", 1, b"what do ya want for nothing?"),
            "timestamp is signed"
        );
        assert_ne!(
            s,
            sign(b"jefe", 0, b"what do ya want for nothing?"),
            "key matters"
        );
    }
}
