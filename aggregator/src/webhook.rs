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
    if post_signed(client, &h.url, &h.secret, body, ATTEMPTS).await {
        metrics.webhooks_delivered.fetch_add(1, Relaxed);
    } else {
        metrics.webhooks_failed.fetch_add(1, Relaxed);
    }
}

/// POSTs `body` as JSON to `url`, signed with `secret` (see [`sign`]),
/// retrying failures and non-2xx answers with exponential backoff (0.5 s
/// doubling) up to `attempts` times. True once the receiver took it.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: &[u8],
    body: &[u8],
    attempts: u32,
) -> bool {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=attempts {
        let ts = darkscope_common::Timestamp::now().secs();
        let r = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Darkscope-Timestamp", ts.to_string())
            .header("X-Darkscope-Signature", sign(secret, ts, body))
            .body(body.to_vec())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => return true,
            Ok(resp) => log::warn!(
                "webhook {url} answered {} (attempt {attempt}/{attempts})",
                resp.status()
            ),
            Err(e) => log::warn!(
                "webhook {url} failed: {} (attempt {attempt}/{attempts})",
                darkscope_common::causes(&e)
            ),
        }
        if attempt < attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
    false
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
