//! A read-only TAXII 2.1 server under `/taxii2/`: discovery, one API root
//! (`/taxii2/feeds/`), and per subscriber one collection holding its own
//! hosts as STIX 2.1 (see [`crate::stix`]), plus, when configured, a shared
//! collection of aggregate indicators (surge alerts, no host addresses).
//!
//! Authentication: the subscriber's token, as a bearer token or as the
//! password of HTTP Basic (what most TAXII clients send). A subscriber sees
//! only its own collection (and the shared one).
//!
//! Objects are ordered by `date_added`: the time the aggregator last added
//! to the host-day they describe; a host seen again later reappears with a
//! newer version of the same objects. `added_after`, `limit` (default 100,
//! at most 1000), `next`, `match[type]` and `match[id]` are supported;
//! responses carry `X-TAXII-Date-Added-First`/`-Last`.

use crate::api::{blocking, subscriber_auth, AppState};
use crate::feeds::{self, FeedEvent};
use crate::stix::{self, Context};
use crate::store::{FeedCursor, Store, StoreError, SubscriberRecord};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use darkscope_common::Timestamp;
use serde_json::{json, Value};
use std::collections::HashMap;

/// TAXII's media type.
pub const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// The one API root.
const ROOT: &str = "/taxii2/feeds/";
/// Objects per page by default and at most.
const LIMIT_DEFAULT: usize = 100;
const LIMIT_MAX: usize = 1000;
/// Host-days read from the store per step while filling a page.
const GROUPS_PER_READ: usize = 64;

/// The TAXII routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/taxii2/", get(discovery))
        .route(ROOT, get(api_root))
        .route("/taxii2/feeds/collections/", get(collections))
        .route("/taxii2/feeds/collections/{id}/", get(collection))
        .route("/taxii2/feeds/collections/{id}/objects/", get(objects))
        .route("/taxii2/feeds/collections/{id}/manifest/", get(manifest))
        .route(
            "/taxii2/feeds/collections/{id}/objects/{object}/",
            get(object),
        )
        .route(
            "/taxii2/feeds/collections/{id}/objects/{object}/versions/",
            get(versions),
        )
}

/// A TAXII error message resource.
struct TaxiiError {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_str(),
        });
        (self.status, taxii_type(), body.to_string()).into_response()
    }
}

fn error(status: StatusCode, title: &'static str, description: impl Into<String>) -> TaxiiError {
    TaxiiError {
        status,
        title,
        description: description.into(),
    }
}

fn taxii_type() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE))]
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, taxii_type(), body.to_string()).into_response()
}

/// Checks `Accept` (TAXII media type, or anything generic) and the token.
async fn gate(st: &AppState, headers: &HeaderMap) -> Result<SubscriberRecord, TaxiiError> {
    if let Some(a) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let fine = a.split(',').any(|t| {
            let t = t.trim().to_ascii_lowercase();
            t.starts_with("application/taxii+json")
                || t.starts_with("*/*")
                || t.starts_with("application/*")
                || t.starts_with("application/json")
        });
        if !fine {
            return Err(error(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!("this server answers {MEDIA_TYPE}"),
            ));
        }
    }
    subscriber_auth(st, headers).await.map_err(|e| {
        let status = e.status();
        error(status, "Unauthorized", e.message())
    })
}

/// Our base URL as clients reach it.
fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &st.feeds.cfg.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1");
    let scheme = if st.feeds.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

async fn discovery(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = gate(&st, &headers).await {
        return r.into_response();
    }
    let root = format!("{}{ROOT}", base_url(&st, &headers));
    ok(json!({
        "title": "darkscope TAXII server",
        "description": format!(
            "Infection-alert feeds of {}: hosts in your networks seen scanning unused address space.",
            st.feeds.cfg.operator
        ),
        "default": root,
        "api_roots": [root],
    }))
}

async fn api_root(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = gate(&st, &headers).await {
        return r.into_response();
    }
    ok(json!({
        "title": "darkscope feeds",
        "description": "One collection per subscriber with its own hosts; read-only.",
        "versions": [MEDIA_TYPE],
        "max_content_length": 0,
    }))
}

/// A collection of a subscriber: its own, or the shared one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Own,
    Shared,
}

fn collection_id(key: &str) -> String {
    stix::sdo_id("collection", key)
        .trim_start_matches("collection--")
        .to_string()
}

fn collection_doc(st: &AppState, sub: &SubscriberRecord, which: Which) -> Value {
    let (id, title, description) = match which {
        Which::Own => (
            collection_id(&format!("subscriber:{}", sub.id)),
            format!("Scanning hosts of {}", sub.id),
            "Hosts in your prefixes and ASNs seen scanning the darknet, one observed-data per host and day; Mirai-fingerprinted hosts also as indicator and sighting.".to_string(),
        ),
        Which::Shared => (
            collection_id("shared"),
            "Scanning surges".to_string(),
            format!(
                "Aggregate indicators from {}'s surge detector: ports that many new sources started to scan. No host addresses.",
                st.feeds.cfg.operator
            ),
        ),
    };
    json!({
        "id": id, "title": title, "description": description,
        "can_read": true, "can_write": false,
        "media_types": [stix::MEDIA_TYPE],
    })
}

/// The collection `id` names, if this subscriber may read it.
fn resolve(st: &AppState, sub: &SubscriberRecord, id: &str) -> Result<Which, TaxiiError> {
    if id == collection_id(&format!("subscriber:{}", sub.id)) {
        Ok(Which::Own)
    } else if st.feeds.cfg.shared_collection && id == collection_id("shared") {
        Ok(Which::Shared)
    } else {
        // Another subscriber's collection is indistinguishable from none.
        Err(error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no collection '{id}' here"),
        ))
    }
}

async fn collections(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let sub = match gate(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let mut v = vec![collection_doc(&st, &sub, Which::Own)];
    if st.feeds.cfg.shared_collection {
        v.push(collection_doc(&st, &sub, Which::Shared));
    }
    ok(json!({ "collections": v }))
}

async fn collection(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let sub = match gate(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match resolve(&st, &sub, &id) {
        Ok(w) => ok(collection_doc(&st, &sub, w)),
        Err(r) => r.into_response(),
    }
}

/// Where a page starts: after the group `after`, skipping `skip` objects of
/// the next group if that group is still `expect` (it may have moved on).
#[derive(Clone, Debug, Default, PartialEq)]
struct Position {
    after: FeedCursor,
    skip: usize,
    expect: Option<FeedCursor>,
}

impl Position {
    fn text(&self) -> String {
        format!(
            "{}~{}~{}",
            feeds::cursor_text(&self.after),
            self.skip,
            self.expect
                .as_ref()
                .map(feeds::cursor_text)
                .unwrap_or_default()
        )
    }

    fn parse(s: &str) -> Option<Position> {
        let mut it = s.splitn(3, '~');
        let after = feeds::parse_cursor(it.next()?)?;
        let skip = it.next()?.parse().ok()?;
        let expect = match it.next()? {
            "" => None,
            e => Some(feeds::parse_cursor(e)?),
        };
        Some(Position {
            after,
            skip,
            expect,
        })
    }
}

/// Parses a `next` value (for the fuzz target): whether it is one.
#[doc(hidden)]
pub fn parse_position(s: &str) -> bool {
    Position::parse(s).is_some_and(|p| Position::parse(&p.text()) == Some(p))
}

/// One object with the time it was added.
struct Item {
    added: Timestamp,
    object: Value,
}

/// A page of the collection's stream.
struct Page {
    items: Vec<Item>,
    next: Option<Position>,
}

/// Query filters.
struct Filter {
    types: Option<Vec<String>>,
    ids: Option<Vec<String>>,
}

impl Filter {
    fn from(q: &HashMap<String, String>) -> Filter {
        let list = |k: &str| {
            q.get(k)
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        };
        Filter {
            types: list("match[type]"),
            ids: list("match[id]"),
        }
    }

    fn keeps(&self, o: &Value) -> bool {
        let has = |list: &Option<Vec<String>>, key: &str| {
            list.as_ref()
                .is_none_or(|l| l.iter().any(|x| o[key].as_str() == Some(x)))
        };
        has(&self.types, "type") && has(&self.ids, "id")
    }
}

/// Fills a page of a subscriber's own collection from `pos`.
fn own_page(
    store: &dyn Store,
    ctx: &Context,
    sub: &SubscriberRecord,
    mut pos: Position,
    limit: usize,
    filter: &Filter,
) -> Result<Page, StoreError> {
    // The shared objects come first, added when the subscriber was.
    let head_key = FeedCursor {
        stored_at: sub.created.0,
        day: 0,
        ip: String::new(),
    };
    let mut items = Vec::new();
    loop {
        let mut groups: Vec<(FeedCursor, Vec<Value>)> = Vec::new();
        if pos.after < head_key {
            groups.push((head_key.clone(), ctx.shared_objects()));
        }
        groups.extend(
            feeds::changes(store, &sub.id, &pos.after, GROUPS_PER_READ)?
                .into_iter()
                .map(|(k, e): (FeedCursor, FeedEvent)| (k, ctx.event_objects(&sub.id, &e))),
        );
        if groups.is_empty() {
            return Ok(Page { items, next: None });
        }
        for (k, objs) in groups {
            let from = if pos.expect.as_ref() == Some(&k) {
                pos.skip
            } else {
                0
            };
            for (i, o) in objs.into_iter().enumerate().skip(from) {
                if !filter.keeps(&o) {
                    continue;
                }
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        next: Some(Position {
                            after: pos.after,
                            skip: i,
                            expect: Some(k),
                        }),
                    });
                }
                items.push(Item {
                    added: Timestamp(k.stored_at),
                    object: o,
                });
            }
            pos = Position {
                after: k,
                skip: 0,
                expect: None,
            };
        }
    }
}

/// Fills a page of the shared collection (alerts) from `pos` (its cursor's
/// `stored_at` is a date added, `day` an alert id).
fn shared_page(
    store: &dyn Store,
    ctx: &Context,
    pos: Position,
    limit: usize,
    filter: &Filter,
) -> Result<Page, StoreError> {
    let mut all: Vec<(FeedCursor, Value)> = ctx
        .shared_objects()
        .into_iter()
        .filter(|o| o["type"] != "malware")
        .enumerate()
        .map(|(i, o)| {
            (
                FeedCursor {
                    stored_at: 1,
                    day: i as u64,
                    ip: String::new(),
                },
                o,
            )
        })
        .collect();
    for a in store.alerts(Timestamp(0), None)? {
        let added = a.resolved_at.unwrap_or(a.start);
        all.push((
            FeedCursor {
                stored_at: added.0,
                day: a.id as u64 + 2,
                ip: String::new(),
            },
            ctx.alert_indicator(&a),
        ));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut items = Vec::new();
    let mut last = None;
    for (k, o) in all.into_iter().filter(|(k, _)| *k > pos.after) {
        if !filter.keeps(&o) {
            continue;
        }
        if items.len() == limit {
            return Ok(Page {
                items,
                next: last.map(|after| Position {
                    after,
                    ..Default::default()
                }),
            });
        }
        items.push(Item {
            added: Timestamp(k.stored_at),
            object: o,
        });
        last = Some(k);
    }
    Ok(Page { items, next: None })
}

/// Reads `added_after`, `next` and `limit`.
fn paging(q: &HashMap<String, String>) -> Result<(Position, usize), TaxiiError> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "Bad request", m);
    let limit = match q.get("limit") {
        None => LIMIT_DEFAULT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(LIMIT_MAX))
            .ok_or_else(|| bad(format!("'limit' must be a positive number, not '{v}'")))?,
    };
    let pos = match (q.get("next"), q.get("added_after")) {
        (Some(n), _) => Position::parse(n)
            .ok_or_else(|| bad("'next' must be a value this server handed out".into()))?,
        (None, Some(t)) => Position {
            after: feeds::cursor_after(Timestamp::parse_rfc3339(t).map_err(|_| {
                bad(format!(
                    "'added_after' must be a timestamp such as 2026-11-21T10:00:00Z, not '{t}'"
                ))
            })?),
            ..Default::default()
        },
        (None, None) => Position::default(),
    };
    Ok((pos, limit))
}

/// The page of collection `id` a request asks for.
async fn page_for(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Page, TaxiiError> {
    let sub = gate(st, headers).await?;
    let which = resolve(st, &sub, id)?;
    let (pos, limit) = paging(q)?;
    let filter = Filter::from(q);
    let store = st.store.clone();
    let ctx = Context::new(&st.feeds.cfg.operator, &st.feeds.cfg.tlp);
    blocking(move || {
        Ok(match which {
            Which::Own => own_page(store.as_ref(), &ctx, &sub, pos, limit, &filter)?,
            Which::Shared => shared_page(store.as_ref(), &ctx, pos, limit, &filter)?,
        })
    })
    .await
    .map_err(|e| error(e.status(), "Server error", e.message()))
}

/// A page as a response with the date-added headers.
fn paged(page: &Page, body: Value) -> Response {
    let mut r = ok(body);
    if let (Some(f), Some(l)) = (page.items.first(), page.items.last()) {
        for (name, t) in [
            ("x-taxii-date-added-first", f.added),
            ("x-taxii-date-added-last", l.added),
        ] {
            if let Ok(v) = HeaderValue::from_str(&t.to_string()) {
                r.headers_mut().insert(name, v);
            }
        }
    }
    r
}

fn envelope(page: &Page, objects: Vec<Value>) -> Value {
    let mut v = json!({ "more": page.next.is_some(), "objects": objects });
    if let Some(n) = &page.next {
        v["next"] = json!(n.text());
    }
    v
}

/// A page of collection `id`, each item shown by `show`, in an envelope.
async fn serve_page(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    q: &HashMap<String, String>,
    show: impl Fn(&Item) -> Value,
) -> Response {
    match page_for(st, headers, id, q).await {
        Ok(page) => {
            let shown = page.items.iter().map(show).collect();
            paged(&page, envelope(&page, shown))
        }
        Err(r) => r.into_response(),
    }
}

async fn objects(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    serve_page(&st, &headers, &id, &q, |i| i.object.clone()).await
}

fn version_of(i: &Item) -> String {
    i.object["modified"]
        .as_str()
        .or(i.object["created"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| stix::time(i.added))
}

async fn manifest(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    serve_page(&st, &headers, &id, &q, |i| {
        json!({
            "id": i.object["id"], "date_added": i.added.to_string(),
            "version": version_of(i), "media_type": stix::MEDIA_TYPE,
        })
    })
    .await
}

/// The current version of object `object` in the collection, as a
/// one-item page (a scan: ids are hashes of what they describe; an SCO
/// recurs across host-days and the latest is kept).
async fn find(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    object: &str,
) -> Result<Page, TaxiiError> {
    let mut q = HashMap::new();
    q.insert("match[id]".to_string(), object.to_string());
    q.insert("limit".to_string(), LIMIT_MAX.to_string());
    let mut latest = None;
    loop {
        let page = page_for(st, headers, id, &q).await?;
        latest = page.items.into_iter().last().or(latest);
        match page.next {
            Some(n) => {
                q.insert("next".into(), n.text());
            }
            None => break,
        }
    }
    let item = latest.ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no object '{object}' in this collection"),
        )
    })?;
    Ok(Page {
        items: vec![item],
        next: None,
    })
}

async fn object(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, object)): Path<(String, String)>,
) -> Response {
    match find(&st, &headers, &id, &object).await {
        Ok(page) => {
            let objs = page.items.iter().map(|i| i.object.clone()).collect();
            paged(&page, envelope(&page, objs))
        }
        Err(r) => r.into_response(),
    }
}

async fn versions(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, object)): Path<(String, String)>,
) -> Response {
    match find(&st, &headers, &id, &object).await {
        Ok(page) => {
            let v: Vec<String> = page.items.iter().map(version_of).collect();
            paged(&page, json!({ "more": false, "versions": v }))
        }
        Err(r) => r.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let p = Position {
            after: FeedCursor {
                stored_at: 5,
                day: 6,
                ip: "2001:db8::1".into(),
            },
            skip: 3,
            expect: Some(FeedCursor {
                stored_at: 9,
                day: 6,
                ip: "198.18.1.2".into(),
            }),
        };
        assert_eq!(Position::parse(&p.text()), Some(p));
        assert_eq!(
            Position::parse(&Position::default().text()),
            Some(Position::default())
        );
        assert_eq!(Position::parse("x~1~"), None);
        assert_eq!(Position::parse("1_2_~nope~"), None);
    }
}
