//! HTTP limits applied to every request: a per-credential rate limit
//! (token bucket keyed by the bearer token's digest, or by the client
//! address when there is no token; local callers without a token, the
//! operator's console and tools, are not rate-limited), a cap on requests
//! in flight, and a deadline per request. Over a limit the answer is 429 (with
//! `Retry-After`), 503 or 408; sensors' uploaders retry all three. Below the
//! router, every connection gets a deadline for its request headers and caps
//! on their size and number ([`Limits::harden`]).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained requests per minute per credential (or per address
    /// without one); bursts up to `burst`. 0 = no rate limit.
    pub requests_per_minute: u32,
    /// Requests a credential may make at once before the rate applies.
    pub burst: u32,
    /// Requests in flight at once, all callers together; more get 503.
    pub max_in_flight: usize,
    /// Seconds a request may take before it is answered 408.
    pub request_timeout_secs: u64,
    /// Seconds a client may take to send a request's headers; a slower one
    /// (slowloris) is disconnected.
    pub header_timeout_secs: u64,
    /// Largest request head (request line and headers), bytes (8192 to
    /// 1048576); a larger one is answered 431 and disconnected.
    pub max_header_bytes: usize,
    /// Most header fields in a request; more are answered 431.
    pub max_headers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            // A sensor sends one summary a minute; an analyst's console a
            // few dozen requests per view: generous, but bounded.
            requests_per_minute: 600,
            burst: 120,
            max_in_flight: 512,
            request_timeout_secs: 120,
            header_timeout_secs: 10,
            max_header_bytes: 64 * 1024,
            max_headers: 64,
        }
    }
}

impl LimitsConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 || !(1..=3600).contains(&self.request_timeout_secs) {
            return Err(
                "[limits] max_in_flight must be at least 1 and request_timeout_secs 1-3600".into(),
            );
        }
        if !(1..=600).contains(&self.header_timeout_secs)
            || !(8192..=1 << 20).contains(&self.max_header_bytes)
            || !(8..=1000).contains(&self.max_headers)
        {
            return Err("[limits] header_timeout_secs must be 1-600, max_header_bytes 8192-1048576 and max_headers 8-1000".into());
        }
        if self.requests_per_minute > 0 && self.burst == 0 {
            return Err("[limits] burst must be at least 1".into());
        }
        Ok(())
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter shared by all requests.
pub struct Limits {
    cfg: LimitsConfig,
    buckets: Mutex<HashMap<Vec<u8>, Bucket>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Most callers tracked at once; past it, idle buckets are dropped.
const MAX_BUCKETS: usize = 100_000;

impl Limits {
    /// Its settings.
    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// Applies the header limits to the HTTP/1 connections of `server`.
    pub fn harden<A>(&self, server: &mut axum_server::Server<A>) {
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(self.cfg.header_timeout_secs))
            .max_headers(self.cfg.max_headers)
            .max_buf_size(self.cfg.max_header_bytes);
    }

    /// A limiter for `cfg`.
    pub fn new(cfg: LimitsConfig) -> Limits {
        Limits {
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight)),
            cfg,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; `Err(seconds to wait)` when empty.
    fn take(&self, key: Vec<u8>) -> Result<(), u64> {
        if self.cfg.requests_per_minute == 0 {
            return Ok(());
        }
        let rate = self.cfg.requests_per_minute as f64 / 60.0;
        let burst = self.cfg.burst as f64;
        let now = Instant::now();
        let Ok(mut b) = self.buckets.lock() else {
            return Ok(());
        };
        if b.len() > MAX_BUCKETS {
            b.retain(|_, v| now.duration_since(v.at).as_secs_f64() * rate < burst);
        }
        let e = b.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        e.tokens = (e.tokens + now.duration_since(e.at).as_secs_f64() * rate).min(burst);
        e.at = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - e.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The middleware: rate, then in-flight cap, then deadline.
pub async fn enforce(State(l): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let key = match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
    {
        Some(t) => Some(crate::auth::token_hash(t)),
        None if peer.is_some_and(|ip| ip.is_loopback()) => None,
        None => Some(
            peer.map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
        ),
    };
    if let Some(Err(wait)) = key.map(|k| l.take(k)) {
        let mut r = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit for this credential reached; retry later",
        );
        if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let Ok(_permit) = l.in_flight.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry later",
        );
    };
    match tokio::time::timeout(
        Duration::from_secs(l.cfg.request_timeout_secs),
        next.run(req),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => refuse(StatusCode::REQUEST_TIMEOUT, "request took too long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_per_credential() {
        let l = Limits::new(LimitsConfig {
            requests_per_minute: 60,
            burst: 3,
            ..Default::default()
        });
        for _ in 0..3 {
            assert!(l.take(b"a".to_vec()).is_ok());
        }
        assert_eq!(l.take(b"a".to_vec()), Err(1));
        assert!(
            l.take(b"b".to_vec()).is_ok(),
            "other credentials are not affected"
        );
        let off = Limits::new(LimitsConfig {
            requests_per_minute: 0,
            ..Default::default()
        });
        for _ in 0..1000 {
            assert!(off.take(b"a".to_vec()).is_ok());
        }
    }
}
