//! The HTTP API: ingest, queries, metrics, health. [`router`] builds the
//! whole service from its state so tests can drive it without a socket;
//! [`serve`] runs it on a listener with graceful shutdown.

use crate::auth;
use crate::ingest::{self, IngestError};
use crate::metrics::Metrics;
use crate::store::{Inserted, PortFilter, Scope, Store, StoreError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use darkscope_common::{Addr, Proto, Timestamp};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Shared state of the service.
#[derive(Clone)]
pub struct AppState {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Largest summary accepted (compressed and decompressed), bytes.
    pub max_body: usize,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Who needs an analyst token for queries.
    pub query_auth: crate::config::QueryAuth,
    /// New alerts, for the event stream.
    pub alert_events: tokio::sync::broadcast::Sender<crate::store::Alert>,
    /// Federation with peer aggregators, when configured.
    pub federation: Option<Arc<crate::federation::Federation>>,
    /// This replica's part in the leader election.
    pub leadership: Arc<crate::cluster::Leadership>,
    /// Rate, in-flight and time limits on every request.
    pub limits: Arc<crate::limits::Limits>,
    /// Feed settings and the subscriptions ingest matches against.
    pub feeds: Arc<crate::feeds::FeedState>,
}

/// An error answer: a status and a message, sent as `{"error": "..."}`.
/// Storage details are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        log::error!("{e}");
        match e {
            StoreError::DiskFull(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the aggregator's disk is full; nothing was stored, retry later",
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage error; the request can be retried",
            ),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let status = match e {
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Encoding(_) if e.to_string().starts_with("unsupported") => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The bearer token of a request, or 401 with `missing` as the message.
fn bearer_token<'a>(headers: &'a HeaderMap, missing: &str) -> ApiResult<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, missing))
}

/// Runs blocking storage work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("worker failed: {e}"),
        )
    })?
}

/// Lets a query through when the caller may read: on loopback under
/// `loopback-open`, otherwise only with a valid analyst token. Sensor tokens
/// never read. Without connection information the caller counts as remote.
async fn analyst_gate(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let loopback = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    if loopback && st.query_auth == crate::config::QueryAuth::LoopbackOpen {
        return next.run(req).await;
    }
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
    else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "queries need an analyst token: 'Authorization: Bearer <token>' (darkscope-aggregator analyst add)",
        )
        .into_response();
    };
    let hash = auth::token_hash(token);
    let store = st.store.clone();
    match blocking(move || Ok(store.analyst_by_token(&hash)?)).await {
        Ok(Some(a)) if a.revoked.is_none() => next.run(req).await,
        Ok(Some(_)) => ApiError::new(StatusCode::UNAUTHORIZED, "this analyst token was revoked")
            .into_response(),
        Ok(None) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unknown analyst token").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The whole service.
pub fn router(state: AppState) -> Router {
    let queries = Router::new()
        .route("/api/v1/ports/top", get(ports_top))
        .route("/api/v1/series", get(total_series))
        .route("/api/v1/ports/{proto}/{port}/series", get(port_series))
        .route("/api/v1/ports/{proto}/{port}", get(port_detail))
        .route("/api/v1/sources/{ip}", get(source))
        .route("/api/v1/sensors", get(sensors))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/stream", get(alert_stream))
        .route("/api/v1/alerts/{id}", get(alert_detail))
        .route("/api/v1/federation/peers", get(federation_peers))
        .route("/api/v1/federation/audit", get(federation_audit))
        .route("/api/v1/cluster", get(cluster))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            analyst_gate,
        ));
    Router::new()
        .merge(queries)
        .route("/api/v1/summaries", post(ingest_summary))
        .route("/api/v1/feeds/events.csv", get(feed_csv))
        .route("/api/v1/feeds/events.json", get(feed_json))
        .route("/api/v1/feeds/events.stix", get(feed_stix))
        .merge(crate::taxii::routes())
        .route("/api/v1/federation/changes", get(federation_changes))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(crate::dashboard::index))
        .route("/assets/{*path}", get(crate::dashboard::asset))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            crate::limits::enforce,
        ))
        .with_state(state)
}

async fn ingest_summary(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let t0 = Instant::now();
    let metrics = st.metrics.clone();
    let r = ingest_inner(st, headers, body).await;
    match &r {
        Ok(_) => metrics.record_ingest(t0.elapsed().as_micros() as u64),
        Err(e) if e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN => {
            metrics.unauthorized.fetch_add(1, Relaxed);
        }
        Err(e) if e.status.is_client_error() => {
            metrics.rejected.fetch_add(1, Relaxed);
        }
        Err(_) => {
            metrics.store_errors.fetch_add(1, Relaxed);
        }
    }
    r.into_response()
}

async fn ingest_inner(st: AppState, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    // Credentials first: an unknown caller never gets us to read its body.
    let token = bearer_token(&headers, "missing 'Authorization: Bearer <token>'")?;
    let hash = auth::token_hash(token);
    let store = st.store.clone();
    let sensor = blocking(move || Ok(store.sensor_by_token(&hash)?))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"))?;
    if sensor.revoked.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("the token of sensor '{}' was revoked", sensor.id),
        ));
    }
    let limit = st.max_body;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )
    })?;
    let text = |h| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (encoding, content_type) = (text(header::CONTENT_ENCODING), text(header::CONTENT_TYPE));
    let summary = blocking(move || {
        let bytes = ingest::decode_body(encoding.as_deref(), &raw, limit)?;
        Ok(ingest::parse_as(content_type.as_deref(), &bytes)?)
    })
    .await?;
    if let Some(sent) = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        st.metrics.sensor_clock(&sensor.id, sent);
    }
    if summary.sensor.id != sensor.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token belongs to sensor '{}', not '{}'",
                sensor.id, summary.sensor.id
            ),
        ));
    }
    let store = st.store.clone();
    let country = sensor.country.clone();
    let start = summary.window.start;
    let id = sensor.id.clone();
    let (feeds, metrics) = (st.feeds.clone(), st.metrics.clone());
    let inserted = blocking(move || {
        let matches = feeds.owners(store.as_ref()).matches(&summary);
        let r = store.insert_summary_with(&summary, &country, &matches)?;
        if r != Inserted::Duplicate {
            metrics.feed_events.fetch_add(matches.len() as u64, Relaxed);
        }
        Ok(r)
    })
    .await?;
    let body = json!({
        "sensor": id,
        "window_start": start,
        "stored": inserted != Inserted::Duplicate,
        "duplicate": inserted == Inserted::Duplicate,
    });
    Ok(match inserted {
        Inserted::New | Inserted::Replaced => {
            st.metrics.stored.fetch_add(1, Relaxed);
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Inserted::Duplicate => {
            st.metrics.duplicates.fetch_add(1, Relaxed);
            (StatusCode::OK, Json(body)).into_response()
        }
    })
}

type Params = Query<HashMap<String, String>>;

fn time_param(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<Timestamp>> {
    q.get(key)
        .map(|v| {
            Timestamp::parse_rfc3339(v).map_err(|_| {
                ApiError::bad_request(format!(
                    "'{key}' must be an RFC 3339 time such as 2026-11-21T10:00:00Z, not '{v}'"
                ))
            })
        })
        .transpose()
}

/// `from`/`to` with defaults: the last 24 hours.
fn range(q: &HashMap<String, String>) -> ApiResult<(Timestamp, Timestamp)> {
    let to = time_param(q, "to")?.unwrap_or_else(Timestamp::now);
    let from = time_param(q, "from")?.unwrap_or(Timestamp(to.0.saturating_sub(86_400_000_000)));
    if from >= to {
        return Err(ApiError::bad_request("'from' must be before 'to'"));
    }
    if to.0 - from.0 > 400 * 86_400_000_000 {
        return Err(ApiError::bad_request("a range may span at most 400 days"));
    }
    Ok((from, to))
}

fn limit_param(q: &HashMap<String, String>, default: usize) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("'limit' must be 1-1000, not '{v}'"))),
    }
}

fn proto_param(v: &str) -> ApiResult<Proto> {
    Proto::parse(v).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown protocol '{v}' (tcp, udp, icmp, icmpv6, ip)"
        ))
    })
}

/// Runs `value` through every query-parameter parser, as each parameter of
/// every endpoint would get it; for the `query_params` fuzz target.
#[doc(hidden)]
pub fn parse_query_value(value: &str) {
    let mut q = HashMap::new();
    for key in [
        "from", "to", "since", "limit", "scope", "date", "tag", "cursor", "step",
    ] {
        q.insert(key.to_string(), value.to_string());
    }
    let _ = range(&q);
    let _ = time_param(&q, "since");
    let _ = limit_param(&q, 20);
    let _ = scope_param(&q);
    let _ = proto_param(value);
    let _ = feed_day(&q);
    let _ = feed_tag(&q);
    let _ = value.parse::<std::net::IpAddr>().map(Addr::from);
    let _ = crate::taxii::parse_position(value);
}

fn scope_param(q: &HashMap<String, String>) -> ApiResult<Scope> {
    match q.get("scope") {
        None => Ok(Scope::Local),
        Some(v) => Scope::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!("'scope' must be local or global, not '{v}'"))
        }),
    }
}

async fn ports_top(State(st): State<AppState>, Query(q): Params) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let (from, to) = range(&q)?;
    let limit = limit_param(&q, 20)?;
    let filter = PortFilter {
        from,
        to,
        proto: q.get("proto").map(|p| proto_param(p)).transpose()?,
        sensor: q.get("sensor").cloned(),
        country: q.get("country").map(|c| c.to_ascii_uppercase()),
        scope: scope_param(&q)?,
    };
    let store = st.store.clone();
    let ports = blocking(move || Ok(store.top_ports(&filter, limit)?)).await?;
    Ok(Json(json!({ "from": from, "to": to, "ports": ports })).into_response())
}

async fn port_series(
    State(st): State<AppState>,
    Path((proto, port)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let (proto, port) = port_path(&proto, &port)?;
    let (from, to) = range(&q)?;
    let step_us = step_param(&q, to.0 - from.0)?;
    let scope = scope_param(&q)?;
    let store = st.store.clone();
    let points =
        blocking(move || Ok(store.port_series(proto, port, from, to, step_us, scope)?)).await?;
    Ok(Json(json!({
        "proto": proto, "port": port, "from": from, "to": to, "scope": scope,
        "step_seconds": step_us / 1_000_000, "points": points,
    }))
    .into_response())
}

/// `step` (seconds or a duration, at least 1 s) for a range of `span_us`;
/// by default about 300 steps in whole minutes; at most 10,000 steps.
fn step_param(q: &HashMap<String, String>, span_us: u64) -> ApiResult<u64> {
    let step_us = match q.get("step") {
        Some(v) => {
            let d = v
                .parse::<u64>()
                .map(std::time::Duration::from_secs)
                .or_else(|_| humantime::parse_duration(v))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "'step' must be seconds or a duration like 5m, 1h; not '{v}'"
                    ))
                })?;
            (d.as_micros() as u64).max(1_000_000)
        }
        None => (span_us / 300).div_ceil(60_000_000).max(1) * 60_000_000,
    };
    if span_us / step_us > 10_000 {
        return Err(ApiError::bad_request(
            "too many steps (more than 10000): use a larger 'step'",
        ));
    }
    Ok(step_us)
}

/// `GET /api/v1/series`: all darknet packets and distinct sources per step.
async fn total_series(State(st): State<AppState>, Query(q): Params) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let (from, to) = range(&q)?;
    let step_us = step_param(&q, to.0 - from.0)?;
    let scope = scope_param(&q)?;
    let store = st.store.clone();
    let points = blocking(move || Ok(store.total_series(from, to, step_us, scope)?)).await?;
    Ok(Json(json!({
        "from": from, "to": to, "scope": scope,
        "step_seconds": step_us / 1_000_000, "points": points,
    }))
    .into_response())
}

/// `proto`/`port` path segments.
fn port_path(proto: &str, port: &str) -> ApiResult<(Proto, u16)> {
    let proto = proto_param(proto)?;
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("port must be 0-65535, not '{port}'")))?;
    Ok((proto, port))
}

/// `GET /api/v1/ports/{proto}/{port}`: who sees a port over a range: totals,
/// per sensor and per sensor country, its busiest sources and the shares of
/// its sources carrying each fingerprint.
async fn port_detail(
    State(st): State<AppState>,
    Path((proto, port)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let (proto, port) = port_path(&proto, &port)?;
    let (from, to) = range(&q)?;
    let scope = scope_param(&q)?;
    let limit = limit_param(&q, 10)?;
    let store = st.store.clone();
    let (reach, sources) = blocking(move || {
        let reach = store.port_reach(proto, port, from, to, scope)?;
        let rows = store.sources_between(from, to)?;
        Ok((
            reach,
            crate::store::fold::port_sources(&rows, proto, port, scope, limit),
        ))
    })
    .await?;
    Ok(Json(json!({
        "proto": proto, "port": port, "from": from, "to": to, "scope": scope,
        "packets": reach.packets, "sources": reach.sources,
        "sensors": reach.sensors, "countries": reach.countries,
        "top_sources": sources.top, "sources_found": sources.sources,
        "fingerprints": sources.fingerprints,
    }))
    .into_response())
}

async fn source(
    State(st): State<AppState>,
    Path(ip): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{ip}' is not an IP address")))?;
    let scope = scope_param(&q)?;
    let store = st.store.clone();
    let found = blocking(move || {
        let a = Addr::from(addr);
        Ok(match store.source(a, scope)? {
            Some(info) => Some((info, store.host_feeds(a)?)),
            None => None,
        })
    })
    .await?;
    match found {
        // With the subscribers' feeds that carried it.
        Some((info, feeds)) => {
            let mut v = json!(info);
            v["feeds"] = json!(feeds);
            Ok(Json(v).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no observations of {addr}"),
        )),
    }
}

async fn sensors(State(st): State<AppState>, Query(q): Params) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let scope = scope_param(&q)?;
    let store = st.store.clone();
    let v = blocking(move || Ok(store.sensor_status(Timestamp::now(), scope)?)).await?;
    // With each sensor's clock skew as this replica last saw it.
    let v: Vec<serde_json::Value> = v
        .into_iter()
        .map(|x| {
            let skew = st.metrics.clock_skew(&x.id);
            let mut o = json!(x);
            o["clock_skew_seconds"] = json!(skew);
            o
        })
        .collect();
    Ok(Json(
        json!({ "sensors": v, "clock_skew_warn_seconds": crate::metrics::CLOCK_SKEW_WARN_SECS }),
    )
    .into_response())
}

async fn overview(State(st): State<AppState>, Query(q): Params) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let (from, to) = range(&q)?;
    let scope = scope_param(&q)?;
    let store = st.store.clone();
    let v = blocking(move || Ok(store.overview(from, to, scope)?)).await?;
    Ok(Json(v).into_response())
}

async fn alerts(State(st): State<AppState>, Query(q): Params) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let since = time_param(&q, "since")?.unwrap_or(Timestamp(0));
    let state = match q.get("state").map(String::as_str) {
        None => None,
        Some(s @ ("open" | "resolved")) => Some(s.to_string()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "'state' must be open or resolved, not '{other}'"
            )))
        }
    };
    // Alerts of one detector scope only, when asked.
    let scope = q.get("scope").map(|_| scope_param(&q)).transpose()?;
    let store = st.store.clone();
    let mut v = blocking(move || Ok(store.alerts(since, state.as_deref())?)).await?;
    if let Some(s) = scope {
        v.retain(|a| a.scope == s.as_str());
    }
    Ok(Json(json!({ "alerts": v })).into_response())
}

/// `GET /api/v1/alerts/{id}`: one alert with its evidence from the window
/// it started in: the port's packets and distinct sources there, the
/// sensors and countries that saw them, its busiest sources and their
/// fingerprints.
async fn alert_detail(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    st.metrics.queries.fetch_add(1, Relaxed);
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("alert id must be a number, not '{id}'")))?;
    let store = st.store.clone();
    let table = st.feeds.table.clone();
    let found = blocking(move || {
        let Some(a) = store.alert(id)? else {
            return Ok(None);
        };
        let scope = Scope::parse(&a.scope).unwrap_or_default();
        // The windows that start exactly where the alert does.
        let (from, to) = (a.start, Timestamp(a.start.0 + 1));
        let reach = store.port_reach(a.proto, a.port, from, to, scope)?;
        let mut rows = store.sources_between(from, to)?;
        // A country's or an AS's alert: only its sources.
        let group = crate::detect::Group::parse(&a.group).unwrap_or(crate::detect::Group::All);
        if let (Some(t), false) = (&table, group == crate::detect::Group::All) {
            rows.retain(|r| group.contains(t, r.ip));
        }
        let sources = crate::store::fold::port_sources(&rows, a.proto, a.port, scope, 10);
        Ok(Some((a, reach, sources)))
    })
    .await?;
    let Some((a, reach, sources)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no alert {id}"),
        ));
    };
    Ok(Json(json!({
        "alert": a,
        "evidence": {
            "window_start": a.start,
            // A country's or an AS's alert: the group's own numbers (the
            // sensors and countries are the port's).
            "packets": if a.group.is_empty() { reach.packets } else { sources.packets },
            "sources": if a.group.is_empty() { reach.sources } else { sources.sources },
            "sensors": reach.sensors,
            "countries": reach.countries,
            "top_sources": sources.top,
            "fingerprints": sources.fingerprints,
        },
    }))
    .into_response())
}

/// Server-sent events: the open alerts first, then each new alert as it is
/// detected (`event: alert`, JSON data), with keep-alive comments.
async fn alert_stream(State(st): State<AppState>) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::stream::{self, StreamExt};
    // Subscribe before reading the backlog, so nothing falls in between.
    let rx = st.alert_events.subscribe();
    let store = st.store.clone();
    let open = blocking(move || Ok(store.alerts(Timestamp(0), Some("open"))?)).await?;
    let live = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(a) => return Some((a, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = stream::iter(open.into_iter().rev())
        .chain(live)
        .map(|a| Event::default().event("alert").json_data(&a));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The active subscriber behind the request's token (bearer, or the
/// password of HTTP Basic as TAXII clients send it); 401 otherwise.
pub(crate) async fn subscriber_auth(
    st: &AppState,
    headers: &HeaderMap,
) -> ApiResult<crate::store::SubscriberRecord> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth::bearer(value)
        .map(str::to_string)
        .or_else(|| auth::basic_password(value))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "feeds need the subscriber's token: 'Authorization: Bearer <token>' (or HTTP Basic with the token as password)",
            )
        })?;
    let hash = auth::token_hash(&token);
    let store = st.store.clone();
    blocking(move || Ok(store.subscriber_by_token(&hash)?))
        .await?
        .filter(|s| s.revoked.is_none())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked subscriber token",
            )
        })
}

/// The requested day (`date=YYYY-MM-DD`, default today, UTC).
fn feed_day(q: &HashMap<String, String>) -> ApiResult<(Timestamp, String)> {
    let date = match q.get("date") {
        Some(d) => d.clone(),
        None => Timestamp::now().to_string()[..10].to_string(),
    };
    let day = Timestamp::parse_rfc3339(&format!("{date}T00:00:00Z"))
        .ok()
        .filter(|_| date.len() == 10)
        .ok_or_else(|| ApiError::bad_request(format!("'date' must be YYYY-MM-DD, not '{date}'")))?;
    Ok((day, date))
}

/// The optional `tag` filter (`darknet-scan` or `backscatter`).
fn feed_tag(q: &HashMap<String, String>) -> ApiResult<Option<String>> {
    match q.get("tag").map(String::as_str) {
        None => Ok(None),
        Some(t @ ("darknet-scan" | "backscatter")) => Ok(Some(t.to_string())),
        Some(t) => Err(ApiError::bad_request(format!(
            "'tag' must be darknet-scan or backscatter, not '{t}'"
        ))),
    }
}

/// The subscriber's events of the requested day (`date`, `tag`), and the date.
async fn day_events(
    st: &AppState,
    sub: &str,
    q: &HashMap<String, String>,
) -> ApiResult<(Vec<crate::feeds::FeedEvent>, String)> {
    let (day, date) = feed_day(q)?;
    let tag = feed_tag(q)?;
    let (store, id) = (st.store.clone(), sub.to_string());
    let mut events = blocking(move || Ok(crate::feeds::build(store.as_ref(), &id, day)?)).await?;
    events.retain(|e| tag.as_ref().is_none_or(|t| *t == e.tag));
    Ok((events, date))
}

async fn feed_csv(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult<Response> {
    let sub = subscriber_auth(&st, &headers).await?;
    let (events, date) = day_events(&st, &sub.id, &q).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"darkscope-{date}.csv\""),
            ),
        ],
        crate::feeds::to_csv(&events),
    )
        .into_response())
}

/// One day of the subscriber's feed as a STIX 2.1 bundle.
async fn feed_stix(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult<Response> {
    let sub = subscriber_auth(&st, &headers).await?;
    let (events, _) = day_events(&st, &sub.id, &q).await?;
    let ctx = crate::stix::Context::new(&st.feeds.cfg.operator, &st.feeds.cfg.tlp);
    let mut objects = ctx.shared_objects();
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        for o in ctx.event_objects(&sub.id, e) {
            // Flow objects recur per host; list each once.
            if seen.insert(o["id"].as_str().unwrap_or_default().to_string()) {
                objects.push(o);
            }
        }
    }
    Ok((
        [(header::CONTENT_TYPE, crate::stix::MEDIA_TYPE)],
        crate::stix::bundle(objects).to_string(),
    )
        .into_response())
}

/// Most host-days per page of the JSON change feed.
const FEED_PAGE_MAX: usize = 5000;

async fn feed_json(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult<Response> {
    let sub = subscriber_auth(&st, &headers).await?;
    let tag = feed_tag(&q)?;
    let store = st.store.clone();
    let after = match (q.get("cursor"), time_param(&q, "since")?) {
        (Some(c), _) => Some(crate::feeds::parse_cursor(c).ok_or_else(|| {
            ApiError::bad_request("'cursor' must be a 'next' value this server handed out")
        })?),
        (None, Some(t)) => Some(crate::feeds::cursor_after(t)),
        (None, None) => None,
    };
    let Some(after) = after else {
        // One day, whole.
        let (events, date) = day_events(&st, &sub.id, &q).await?;
        return Ok(
            Json(json!({ "subscriber": sub.id, "date": date, "events": events })).into_response(),
        );
    };
    let limit = match q.get("limit") {
        None => 500,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=FEED_PAGE_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("'limit' must be 1-{FEED_PAGE_MAX}, not '{v}'"))
            })?,
    };
    let id = sub.id.clone();
    let start = after.clone();
    let mut page = blocking(move || {
        Ok(crate::feeds::changes(
            store.as_ref(),
            &id,
            &start,
            limit + 1,
        )?)
    })
    .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = page.last().map(|(c, _)| c.clone()).unwrap_or(after);
    let events: Vec<_> = page
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| tag.as_ref().is_none_or(|t| *t == e.tag))
        .collect();
    Ok(Json(json!({
        "subscriber": sub.id,
        "events": events,
        "next": crate::feeds::cursor_text(&next),
        "more": more,
    }))
    .into_response())
}

/// A peer pulls our changes with the token it was given; the document is
/// cut by that peer's export policy and logged in the audit trail.
async fn federation_changes(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult<Response> {
    let fed = st
        .federation
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "federation is not configured here"))?;
    let token = bearer_token(
        &headers,
        "federation needs the peer's token: 'Authorization: Bearer <token>'",
    )?;
    let peer = crate::federation::peer_by_token(&fed.cfg, token)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown peer token"))?;
    let cursor = match q.get("cursor") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("'cursor' must be a whole number, not '{v}'"))
        })?,
    };
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::federation::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'limit' must be 1-{}, not '{v}'",
                    crate::federation::MAX_LIMIT
                ))
            })?,
    };
    let store = st.store.clone();
    let metrics = st.metrics.clone();
    let doc = blocking(move || {
        let now = Timestamp::now();
        let doc = crate::federation::export(
            store.as_ref(),
            &fed.cfg.id,
            &peer,
            &fed.anon,
            cursor,
            limit,
            now,
        )
        .map_err(|e| {
            log::error!("federation export to '{}': {e}", peer.id);
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export failed; retry later",
            )
        })?;
        store.record_export(&crate::federation::audit_record(&doc, now))?;
        metrics.federation_export(&peer.id, doc.observations.len() as u64);
        Ok(doc)
    })
    .await?;
    Ok(Json(doc).into_response())
}

/// Peers as configured (never their credentials), with sync state.
async fn federation_peers(State(st): State<AppState>) -> ApiResult<Response> {
    let Some(fed) = st.federation.clone() else {
        return Ok(Json(json!({ "id": null, "peers": [] })).into_response());
    };
    let store = st.store.clone();
    let (states, exports) = blocking(move || {
        let day_ago = Timestamp(Timestamp::now().0.saturating_sub(86_400_000_000));
        Ok((store.peer_states()?, store.exports(day_ago, None)?))
    })
    .await?;
    let now = Timestamp::now();
    let peers: Vec<_> = fed
        .cfg
        .peers
        .iter()
        .map(|p| {
            let s = states.iter().find(|s| s.peer == p.id);
            let served: Vec<_> = exports.iter().filter(|e| e.peer == p.id).collect();
            json!({
                "id": p.id,
                "url": p.url,
                "pulls": p.url.is_some(),
                "may_pull_from_us": !p.inbound_token_sha256.is_empty(),
                "export": p.export,
                "import": p.import,
                "cursor": s.map(|s| s.cursor),
                "last_pull": s.and_then(|s| s.last_pull),
                "last_success": s.and_then(|s| s.last_success),
                "last_error": s.map(|s| s.last_error.clone()).unwrap_or_default(),
                "errors": s.map(|s| s.errors).unwrap_or(0),
                "imported": s.map(|s| s.imported).unwrap_or(0),
                "newest_window_end": s.and_then(|s| s.newest_window_end),
                // Sync lag: how stale our copy is. Data age: how old the
                // newest window is (large also when the peer's sensors are quiet).
                "lag_seconds": s.and_then(|s| s.last_success).map(|t| (now.0 as f64 - t.0 as f64) / 1e6),
                "data_age_seconds": s.and_then(|s| s.newest_window_end).map(|t| (now.0 as f64 - t.0 as f64) / 1e6),
                "their_tlp": s.map(|s| s.tlp.clone()).unwrap_or_default(),
                "exports_24h": served.len(),
                "exported_observations_24h": served.iter().map(|e| e.observations).sum::<u64>(),
                "exported_source_rows_24h": served.iter().map(|e| e.source_rows).sum::<u64>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": fed.cfg.id,
        "pull_interval_secs": fed.cfg.pull_interval_secs,
        "peers": peers,
    }))
    .into_response())
}

/// The export audit log: every document served to a peer.
async fn federation_audit(State(st): State<AppState>, Query(q): Params) -> ApiResult<Response> {
    let since = time_param(&q, "since")?.unwrap_or(Timestamp(0));
    let peer = q.get("peer").cloned();
    let store = st.store.clone();
    let v = blocking(move || Ok(store.exports(since, peer.as_deref())?)).await?;
    Ok(Json(json!({ "exports": v })).into_response())
}

/// This replica and the live replicas it sees, with the leader.
async fn cluster(State(st): State<AppState>) -> Response {
    Json(json!({
        "replica": st.leadership.id(),
        "leader": st.leadership.is_leader(),
        "replicas": st.leadership.view(),
    }))
    .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let leader = st.leadership.is_leader() as u8;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!(
            "{}# HELP darkscope_aggregator_leader 1 while this replica runs detection, retention and federation pulls.\n# TYPE darkscope_aggregator_leader gauge\ndarkscope_aggregator_leader {leader}\n",
            st.metrics.render()
        ),
    )
        .into_response()
}

/// How long stored data is kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Raw per-window rows.
    pub raw: std::time::Duration,
    /// Hourly roll-ups.
    pub rollups: std::time::Duration,
}

/// What the background task does besides serving.
pub struct Background {
    /// Retention periods.
    pub retention: Retention,
    /// Between roll-up and detection runs.
    pub interval: std::time::Duration,
    /// The surge detector.
    pub detector: crate::detect::Detector,
    /// Webhook receivers of new alerts.
    pub webhooks: Vec<crate::webhook::Webhook>,
    /// TLS for the listener ([`crate::config::Config::tls`]); plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves `router(state)` on `listener` until `shutdown` resolves. In the
/// background: roll-ups and surge detection every `bg.interval` (new alerts
/// go to the webhooks), retention every hour.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    bg: Background,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let metrics = state.metrics.clone();
    let events = state.alert_events.clone();
    let leadership = state.leadership.clone();
    let tls = bg.tls.clone();
    let retention = bg.retention;
    let hooks =
        (!bg.webhooks.is_empty()).then(|| crate::webhook::spawn(bg.webhooks, metrics.clone()));
    let detector = Arc::new(std::sync::Mutex::new(bg.detector));
    let per_hour = (3600 / bg.interval.as_secs().max(1)).max(1);
    let janitor = tokio::spawn(async move {
        let mut tick = tokio::time::interval(bg.interval);
        let mut minutes = 0u64;
        loop {
            tick.tick().await;
            // Heartbeat; only the leader does the once-per-cluster work.
            let (s, l) = (store.clone(), leadership.clone());
            match tokio::task::spawn_blocking(move || l.tick(s.as_ref(), Timestamp::now())).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => continue,
                Ok(Err(e)) => {
                    log::warn!("heartbeat failed: {e}");
                    continue;
                }
                Err(_) => continue,
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.rollup(Timestamp::now())).await {
                Ok(Ok(n)) if n > 0 => log::info!("roll-up: built {n} hours"),
                Ok(Err(e)) => log::warn!("roll-up failed: {e}"),
                _ => {}
            }
            let (s, d) = (store.clone(), detector.clone());
            let detected = tokio::task::spawn_blocking(move || match d.lock() {
                Ok(mut d) => d.tick(s.as_ref(), Timestamp::now()),
                Err(_) => Ok(Vec::new()),
            })
            .await;
            match detected {
                Ok(Ok(opened)) => {
                    for a in opened {
                        let _ = events.send(a.clone());
                        if let Some(tx) = &hooks {
                            if tx.try_send(a).is_err() {
                                metrics.webhooks_dropped.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
                Ok(Err(e)) => log::warn!("detection failed: {e}"),
                Err(_) => {}
            }
            if minutes % per_hour == 0 {
                let s = store.clone();
                let now = Timestamp::now().0;
                let raw = Timestamp(now.saturating_sub(retention.raw.as_micros() as u64));
                let rolled = Timestamp(now.saturating_sub(retention.rollups.as_micros() as u64));
                match tokio::task::spawn_blocking(move || s.apply_retention(raw, rolled)).await {
                    Ok(Ok(n)) if n > 0 => {
                        log::info!("retention: deleted {n} windows older than {raw}")
                    }
                    Ok(Err(e)) => log::warn!("retention failed: {e}"),
                    _ => {}
                }
            }
            minutes += 1;
        }
    });
    let limits = state.limits.clone();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let listener = listener.into_std()?;
    let r = match tls {
        None => {
            let mut server = axum_server::from_tcp(listener).handle(handle);
            limits.harden(&mut server);
            server.serve(app).await
        }
        Some(cfg) => {
            let mut server = axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(cfg),
            )
            .handle(handle);
            limits.harden(&mut server);
            server.serve(app).await
        }
    };
    janitor.abort();
    r
}
