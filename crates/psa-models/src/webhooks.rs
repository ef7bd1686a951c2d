//! Webhook endpoints, their deliveries and every attempt (docs/events.md).
//!
//! An endpoint is a URL that wants some event types. When an event is written, a trigger adds a
//! delivery per enabled endpoint that wants it (in the event's transaction); the worker's
//! dispatcher claims due deliveries ([`claim`]), posts them signed, and records each attempt
//! ([`complete`]), which schedules the next one or ends the delivery.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, Page, PageRequest};
use crate::events::{self, EventType};
use crate::{Error, Result, TenantId};

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    pub endpoint_id: Uuid,
    pub url: String,
    pub description: String,
    /// The event types delivered; empty: all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled (by an admin, or by failing too long).
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs too.
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! endpoint_columns {
    () => {
        "endpoint_id, url, description, event_types, enabled, disabled_reason, failing_since, \
         previous_secret_until, created_by, created_at, updated_at"
    };
}

/// Who changes endpoints: an admin of the management tenant (whose audit log records it).
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub management_tenant: TenantId,
    pub actor: &'a crate::audit::Actor,
}

/// An audit row in the management tenant; the transaction leaves its context again after.
async fn audit(
    conn: &mut PgConnection,
    by: By<'_>,
    action: crate::audit::Action,
    endpoint: Uuid,
    details: Value,
) -> Result<()> {
    db::enter_tenant(conn, by.management_tenant).await?;
    crate::audit::record(
        conn,
        by.management_tenant,
        by.actor,
        action,
        "webhook_endpoint",
        Some(endpoint),
        details,
    )
    .await?;
    db::leave_tenant(conn).await
}

/// A URL without its query (a receiver may put a token there): for the audit log.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.query().is_some() {
                u.set_query(Some("..."));
            }
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

/// Whether deliveries may go to private, loopback and link-local addresses (development and
/// tests only: in production such an endpoint would let anyone with `webhook:create` reach
/// services inside the platform's network).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_private: bool,
}

impl AddressPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn allows(self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// Not loopback, private, link-local, unique-local, shared (CGNAT), unspecified, multicast,
/// broadcast, reserved or documentation space. IPv6 forms that carry an IPv4 address (mapped,
/// compatible, NAT64, 6to4) are judged as that address; Teredo, the NAT64 local-use range and
/// site-local addresses are refused outright.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d).
            let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            if compatible || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(s[6], s[7]));
            }
            // 6to4 (2002:a.b.c.d::).
            if s[0] == 0x2002 {
                return is_public(embedded(s[1], s[2]));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] == 0x2001 && s[1] == 0xdb8))
        }
    }
}

/// An endpoint URL: `https://` (or `http://`), a host, no credentials, at most 2048 characters;
/// a literal address or `localhost` must be allowed by `policy`. (Names are checked again at
/// each delivery, against every address they resolve to.)
pub fn parse_url(raw: &str, policy: AddressPolicy) -> Result<url::Url> {
    let bad = |m: &str| Error::validation("url", m.to_owned());
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err(bad("The URL is longer than 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("The URL is invalid: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("The URL must be https:// (or http://)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "The URL must not carry credentials: receivers verify the signature instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("The URL must not have a #fragment"));
    }
    let private = match url.host() {
        None => return Err(bad("The URL has no host")),
        Some(url::Host::Ipv4(v4)) => !is_public(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => !is_public(IpAddr::V6(v6)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    if private && !policy.allow_private {
        return Err(bad(
            "The URL is a private, loopback or link-local address: deliveries there are refused \
             (PSA_WEBHOOK_ALLOW_PRIVATE=true allows them, for development)",
        ));
    }
    Ok(url)
}

fn description(raw: Option<&str>) -> Result<String> {
    let d = raw.unwrap_or("").trim();
    if d.chars().any(char::is_control) {
        return Err(Error::validation(
            "description",
            "The description must be one line without control characters",
        ));
    }
    if d.chars().count() > 500 {
        return Err(Error::validation(
            "description",
            "The description is longer than 500 characters",
        ));
    }
    Ok(d.to_owned())
}

/// What an endpoint is created with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewEndpoint {
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Event types to deliver (docs/events.md); absent or empty: all.
    #[serde(default)]
    pub event_types: Vec<String>,
}

fn event_types(raw: &[String]) -> Result<Vec<String>> {
    let mut types = Vec::new();
    for t in raw {
        let t = EventType::parse(t, "event_types")?.as_str().to_owned();
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

/// Creates the endpoint `id` (minted by the caller, who seals its secret for that id) whose
/// secret, sealed, is `secret_sealed`.
pub async fn create(
    conn: &mut PgConnection,
    id: Uuid,
    new: &NewEndpoint,
    policy: AddressPolicy,
    secret_sealed: &str,
    by: By<'_>,
) -> Result<Endpoint> {
    let url = parse_url(&new.url, policy)?;
    let types = event_types(&new.event_types)?;
    let description = description(new.description.as_deref())?;
    db::leave_tenant(conn).await?;
    let e = sqlx::query_as::<_, Endpoint>(concat!(
        "INSERT INTO webhook_endpoints (endpoint_id, url, description, event_types, \
                                        secret_sealed, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        endpoint_columns!()
    ))
    .bind(id)
    .bind(url.as_str())
    .bind(description)
    .bind(types)
    .bind(secret_sealed)
    .bind(by.actor.to_string())
    .fetch_one(&mut *conn)
    .await?;
    audit(
        conn,
        by,
        crate::audit::Action::Create,
        e.endpoint_id,
        json!({"url": redacted(&e.url), "event_types": e.event_types}),
    )
    .await?;
    Ok(e)
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Endpoint> {
    db::leave_tenant(conn).await?;
    sqlx::query_as::<_, Endpoint>(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints WHERE endpoint_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound {
        entity: "webhook endpoint",
    })
}

/// The endpoints, oldest first, a page at a time.
pub async fn list(conn: &mut PgConnection, paging: &PageRequest) -> Result<Page<Endpoint>> {
    let limit = paging.limit()?;
    let after = paging.decode_cursor()?;
    db::leave_tenant(conn).await?;
    let rows = sqlx::query_as::<_, Endpoint>(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints \
          WHERE ($1::timestamptz IS NULL OR (created_at, endpoint_id) > ($1, $2)) \
          ORDER BY created_at, endpoint_id LIMIT $3"
    ))
    .bind(after_time(&after)?)
    .bind(after.as_ref().map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(conn)
    .await?;
    Ok(crate::db::page(rows, limit, |e| {
        (time_key(e.created_at), e.endpoint_id)
    }))
}

fn time_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn after_time(after: &Option<(String, Uuid)>) -> Result<Option<DateTime<Utc>>> {
    after
        .as_ref()
        .map(|(k, _)| {
            DateTime::parse_from_rfc3339(k)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Error::validation("cursor", "The cursor is invalid"))
        })
        .transpose()
}

/// A partial update of an endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Enabling clears the failure record. A disabled endpoint is sent nothing: its pending
    /// deliveries wait, and events written meanwhile are not queued for it (the events API
    /// has them).
    pub enabled: Option<bool>,
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    patch: &EndpointPatch,
    policy: AddressPolicy,
    by: By<'_>,
) -> Result<Endpoint> {
    let url = patch
        .url
        .as_deref()
        .map(|u| parse_url(u, policy))
        .transpose()?;
    let types = patch.event_types.as_deref().map(event_types).transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(|d| description(Some(d)))
        .transpose()?;
    db::leave_tenant(conn).await?;
    let e = sqlx::query_as::<_, Endpoint>(concat!(
        "UPDATE webhook_endpoints SET url = coalesce($2, url), \
             description = coalesce($3, description), event_types = coalesce($4, event_types), \
             enabled = coalesce($5, enabled), \
             disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason \
                                    WHEN $5 THEN NULL ELSE 'disabled by an administrator' END, \
             failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END, \
             updated_at = now() \
         WHERE endpoint_id = $1 RETURNING ",
        endpoint_columns!()
    ))
    .bind(id)
    .bind(url.as_ref().map(url::Url::as_str))
    .bind(description)
    .bind(types)
    .bind(patch.enabled)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound {
        entity: "webhook endpoint",
    })?;
    audit(
        conn,
        by,
        crate::audit::Action::Update,
        id,
        json!({"url": redacted(&e.url), "event_types": e.event_types, "enabled": e.enabled,
                 "description": e.description}),
    )
    .await?;
    Ok(e)
}

/// Removes an endpoint with its deliveries and their attempts.
pub async fn delete(conn: &mut PgConnection, id: Uuid, by: By<'_>) -> Result<()> {
    db::leave_tenant(conn).await?;
    let url: Option<String> =
        sqlx::query_scalar("DELETE FROM webhook_endpoints WHERE endpoint_id = $1 RETURNING url")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(url) = url else {
        return Err(Error::NotFound {
            entity: "webhook endpoint",
        });
    };
    audit(
        conn,
        by,
        crate::audit::Action::Delete,
        id,
        json!({"url": redacted(&url)}),
    )
    .await
}

/// Replaces the secret with `secret_sealed`; the one before keeps signing (a second signature)
/// for `overlap`, so receivers can move to the new one without losing a delivery.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    id: Uuid,
    secret_sealed: &str,
    overlap: chrono::Duration,
    by: By<'_>,
) -> Result<Endpoint> {
    db::leave_tenant(conn).await?;
    let e = sqlx::query_as::<_, Endpoint>(concat!(
        "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed, \
             previous_secret_until = now() + $3, secret_sealed = $2, updated_at = now() \
         WHERE endpoint_id = $1 RETURNING ",
        endpoint_columns!()
    ))
    .bind(id)
    .bind(secret_sealed)
    .bind(overlap)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound {
        entity: "webhook endpoint",
    })?;
    audit(
        conn,
        by,
        crate::audit::Action::RotateSecret,
        id,
        json!({"previous_secret_until": e.previous_secret_until}),
    )
    .await?;
    Ok(e)
}

/// The status of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn parse(raw: &str) -> Result<Self> {
        match raw.trim() {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            _ => Err(Error::validation(
                "status",
                "status must be one of pending, delivered, failed",
            )),
        }
    }
}

/// A delivery of one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// When it is attempted next (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The last attempt's response status and error.
    pub last_response_status: Option<i32>,
    pub last_error: Option<String>,
}

const DELIVERY_SELECT: &str = "SELECT d.delivery_id, d.endpoint_id, d.event_id, e.event_type, \
        d.status, d.attempts, \
        CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at, \
        d.last_attempt_at, d.delivered_at, d.created_at, \
        a.response_status AS last_response_status, a.error AS last_error \
    FROM webhook_deliveries d JOIN events e ON e.event_id = d.event_id \
    LEFT JOIN LATERAL (SELECT response_status, error FROM webhook_attempts \
                       WHERE delivery_id = d.delivery_id \
                       ORDER BY attempted_at DESC LIMIT 1) a ON true";

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    pub attempt_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub response_status: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    /// The start of the response body (512 characters at most).
    pub response_excerpt: Option<String>,
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryDetails {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempt_log: Vec<Attempt>,
}

/// The deliveries to endpoint `endpoint`, newest first, a page at a time.
pub async fn deliveries(
    conn: &mut PgConnection,
    endpoint: Uuid,
    status: Option<DeliveryStatus>,
    paging: &PageRequest,
) -> Result<Page<Delivery>> {
    get(conn, endpoint).await?;
    let limit = paging.limit()?;
    let after = paging.decode_cursor()?;
    let sql = format!(
        "{DELIVERY_SELECT} WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) \
           AND ($3::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($3, $4)) \
         ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $5"
    );
    let rows = sqlx::query_as::<_, Delivery>(&sql)
        .bind(endpoint)
        .bind(status)
        .bind(after_time(&after)?)
        .bind(after.as_ref().map(|a| a.1))
        .bind(limit + 1)
        .fetch_all(conn)
        .await?;
    Ok(crate::db::page(rows, limit, |d| {
        (time_key(d.created_at), d.delivery_id)
    }))
}

/// A delivery of `endpoint` with its attempts.
pub async fn delivery(
    conn: &mut PgConnection,
    endpoint: Uuid,
    id: Uuid,
) -> Result<DeliveryDetails> {
    db::leave_tenant(conn).await?;
    let sql = format!("{DELIVERY_SELECT} WHERE d.endpoint_id = $1 AND d.delivery_id = $2");
    let delivery = sqlx::query_as::<_, Delivery>(&sql)
        .bind(endpoint)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound { entity: "delivery" })?;
    let attempt_log = sqlx::query_as::<_, Attempt>(
        "SELECT attempt_id, attempted_at, response_status, latency_ms, error, response_excerpt \
         FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempted_at, attempt_id",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(DeliveryDetails {
        delivery,
        attempt_log,
    })
}

/// Makes a delivery due now, whatever its status, with its retry schedule from the start (a
/// replay of a delivered one sends it again, under the same `webhook-id`). An attempt in flight
/// meanwhile is recorded but decides nothing: it no longer holds the delivery's claim.
pub async fn retry(
    conn: &mut PgConnection,
    endpoint: Uuid,
    id: Uuid,
    by: By<'_>,
) -> Result<DeliveryDetails> {
    db::leave_tenant(conn).await?;
    let n = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), \
             attempts = 0, claim_token = NULL \
         WHERE endpoint_id = $1 AND delivery_id = $2",
    )
    .bind(endpoint)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::NotFound { entity: "delivery" });
    }
    wake_dispatchers(conn).await?;
    audit(
        conn,
        by,
        crate::audit::Action::RetryDelivery,
        endpoint,
        json!({"delivery_id": id}),
    )
    .await?;
    delivery(conn, endpoint, id).await
}

/// Tells the dispatchers (at commit) that a delivery is due now, as the fan-out trigger does.
async fn wake_dispatchers(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify('psa_webhook_deliveries', '')")
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes a `webhook_endpoint.test` event and delivers it to the endpoint `endpoint` only, now
/// (`psa webhooks test`): a receiver's URL and signature check, tried end to end. Returns the
/// delivery.
pub async fn send_test(
    conn: &mut PgConnection,
    endpoint: Uuid,
    by: By<'_>,
) -> Result<DeliveryDetails> {
    let e = get(conn, endpoint).await?;
    // The fan-out trigger leaves test events alone: the delivery below is its only one.
    let event_id = events::record(
        conn,
        EventType::WebhookEndpointTest,
        None,
        json!({"endpoint_id": e.endpoint_id,
               "message": "A test delivery from psa: the signature verifies with this endpoint's secret."}),
        None,
    )
    .await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id) VALUES ($1, $2) \
         ON CONFLICT (endpoint_id, event_id) DO UPDATE SET next_attempt_at = now() \
         RETURNING delivery_id",
    )
    .bind(endpoint)
    .bind(event_id)
    .fetch_one(&mut *conn)
    .await?;
    wake_dispatchers(conn).await?;
    audit(
        conn,
        by,
        crate::audit::Action::Test,
        endpoint,
        json!({"delivery_id": id, "event_id": event_id}),
    )
    .await?;
    delivery(conn, endpoint, id).await
}

/// A due delivery, claimed by a dispatcher: what it needs to post it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub delivery_id: Uuid,
    /// This claim's token: only its holder completes the delivery.
    pub claim_token: Uuid,
    pub endpoint_id: Uuid,
    pub url: String,
    pub secret_sealed: String,
    pub previous_secret_sealed: Option<String>,
    pub attempts: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_created_at: DateTime<Utc>,
    pub data: Value,
    /// When the delivery was created (its lag is measured from here).
    pub created_at: DateTime<Utc>,
}

/// Claims up to `n` due deliveries of enabled endpoints, oldest due first, for `lease`: a
/// dispatcher that dies holding them leaves them due again when the lease ends (nothing is
/// lost; the receiver may get that attempt twice). Dispatchers skip each other's claims.
pub async fn claim(
    conn: &mut PgConnection,
    n: i64,
    lease: std::time::Duration,
) -> Result<Vec<Claimed>> {
    let lease = chrono::Duration::from_std(lease).map_err(Error::internal)?;
    Ok(sqlx::query_as::<_, Claimed>(
        "WITH due AS (
             SELECT d.delivery_id FROM webhook_deliveries d
             JOIN webhook_endpoints w ON w.endpoint_id = d.endpoint_id AND w.enabled
             WHERE d.status = 'pending' AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED),
         claimed AS (
             UPDATE webhook_deliveries d SET next_attempt_at = now() + $2,
                 claim_token = gen_random_uuid()
             FROM due WHERE d.delivery_id = due.delivery_id
             RETURNING d.delivery_id, d.claim_token, d.endpoint_id, d.event_id, d.attempts,
                       d.created_at)
         SELECT c.delivery_id, c.claim_token, c.endpoint_id, w.url, w.secret_sealed,
                CASE WHEN w.previous_secret_until > now() THEN w.previous_secret_sealed END
                    AS previous_secret_sealed,
                c.attempts, e.event_id, e.event_type, e.created_at AS event_created_at, e.data,
                c.created_at
         FROM claimed c JOIN webhook_endpoints w ON w.endpoint_id = c.endpoint_id
         JOIN events e ON e.event_id = c.event_id",
    )
    .bind(n)
    .bind(lease)
    .fetch_all(conn)
    .await?)
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The response's status, if one came.
    pub response_status: Option<u16>,
    pub latency: std::time::Duration,
    /// Why it failed (no response, or a status outside 2xx); `None`: delivered.
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// At most `max` characters of `text`, control characters (a NUL in a binary body, escapes)
/// shown as U+FFFD: what is stored must be valid text, whatever a receiver answered.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// The delays between attempts: the first at once, then these (about 27 hours in all); with
/// up to 20% of jitter each. After the last, the delivery is failed.
pub const RETRY_SCHEDULE: [std::time::Duration; 7] = [
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(5 * 60),
    std::time::Duration::from_secs(30 * 60),
    std::time::Duration::from_secs(2 * 3600),
    std::time::Duration::from_secs(5 * 3600),
    std::time::Duration::from_secs(10 * 3600),
    std::time::Duration::from_secs(10 * 3600),
];

/// What happened to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Attempted again after this long.
    Retry(std::time::Duration),
    /// The schedule ran out.
    Failed,
    /// The delivery was changed meanwhile (removed with its endpoint, replayed, or claimed
    /// again after this claim's lease ran out): the attempt is recorded, nothing else.
    Gone,
}

/// The settings of [`complete`].
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The delays after each failed attempt (the first attempt is immediate).
    pub delays: Vec<std::time::Duration>,
    /// An endpoint whose attempts have all failed for this long is disabled.
    pub disable_after: std::time::Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            delays: RETRY_SCHEDULE.to_vec(),
            disable_after: std::time::Duration::from_secs(5 * 24 * 3600),
        }
    }
}

/// Records an attempt and decides what follows: delivered, the next attempt (the delay from
/// the schedule with `jitter` in [-0.2, 0.2]), or failed. An endpoint failing for longer than
/// `schedule.disable_after` is disabled, and an event says so.
pub async fn complete(
    conn: &mut PgConnection,
    claimed: &Claimed,
    outcome: &Outcome,
    schedule: &Schedule,
    jitter: f64,
) -> Result<Next> {
    let excerpt = outcome
        .response_excerpt
        .as_deref()
        .map(|b| printable(b, 512));
    let error = outcome.error.as_deref().map(|e| printable(e, 1000));
    let latency_ms = i32::try_from(outcome.latency.as_millis()).unwrap_or(i32::MAX);
    // The endpoint, then the delivery: the order in which removing an endpoint locks them.
    sqlx::query("SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1 FOR NO KEY UPDATE")
        .bind(claimed.endpoint_id)
        .execute(&mut *conn)
        .await?;
    let current: Option<(String, i32, Option<Uuid>)> = sqlx::query_as(
        "SELECT status, attempts, claim_token FROM webhook_deliveries WHERE delivery_id = $1 \
         FOR NO KEY UPDATE",
    )
    .bind(claimed.delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, attempts, token)) = current else {
        return Ok(Next::Gone);
    };
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, response_status, latency_ms, error, \
                                       response_excerpt) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(claimed.delivery_id)
    .bind(outcome.response_status.map(i32::from))
    .bind(latency_ms)
    .bind(&error)
    .bind(&excerpt)
    .execute(&mut *conn)
    .await?;
    // Replayed, or claimed again after this claim's lease ran out: the attempt is on record,
    // the delivery is its current claimant's.
    if status != "pending" || token != Some(claimed.claim_token) {
        return Ok(Next::Gone);
    }
    let attempts = attempts + 1;
    let next = if error.is_none() {
        Next::Delivered
    } else {
        match schedule
            .delays
            .get(usize::try_from(attempts - 1).unwrap_or(usize::MAX))
        {
            // In whole milliseconds: an INTERVAL holds no nanoseconds.
            Some(delay) => Next::Retry(std::time::Duration::from_millis(
                (delay.as_millis() as f64 * (1.0 + jitter.clamp(-0.2, 0.2))) as u64,
            )),
            None => Next::Failed,
        }
    };
    match next {
        Next::Delivered => {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2, \
                     last_attempt_at = now(), delivered_at = now(), claim_token = NULL \
                 WHERE delivery_id = $1",
            )
            .bind(claimed.delivery_id)
            .bind(attempts)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE endpoint_id = $1 AND failing_since IS NOT NULL",
            )
            .bind(claimed.endpoint_id)
            .execute(&mut *conn)
            .await?;
        }
        Next::Retry(delay) => {
            let delay = chrono::Duration::from_std(delay).map_err(Error::internal)?;
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = $2, last_attempt_at = now(), \
                     next_attempt_at = now() + $3, claim_token = NULL WHERE delivery_id = $1",
            )
            .bind(claimed.delivery_id)
            .bind(attempts)
            .bind(delay)
            .execute(&mut *conn)
            .await?;
        }
        Next::Failed | Next::Gone => {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', attempts = $2, \
                     last_attempt_at = now(), claim_token = NULL WHERE delivery_id = $1",
            )
            .bind(claimed.delivery_id)
            .bind(attempts)
            .execute(&mut *conn)
            .await?;
        }
    }
    if next != Next::Delivered {
        endpoint_failed(conn, claimed.endpoint_id, schedule.disable_after).await?;
    }
    Ok(next)
}

/// Notes a failed attempt on the endpoint; disables it when it has failed for too long, with
/// an event (once: the endpoint's row is locked, and only an enabled one is disabled).
async fn endpoint_failed(
    conn: &mut PgConnection,
    endpoint: Uuid,
    disable_after: std::time::Duration,
) -> Result<()> {
    let disable_after = chrono::Duration::from_std(disable_after).map_err(Error::internal)?;
    let row: Option<(bool, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
        "SELECT enabled, failing_since, coalesce(failing_since < now() - $2, false) \
         FROM webhook_endpoints WHERE endpoint_id = $1 FOR NO KEY UPDATE",
    )
    .bind(endpoint)
    .bind(disable_after)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => {}
        Some((_, None, _)) => {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = now() WHERE endpoint_id = $1",
            )
            .bind(endpoint)
            .execute(&mut *conn)
            .await?;
        }
        Some((true, Some(since), true)) => {
            sqlx::query(
                "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, \
                     updated_at = now() WHERE endpoint_id = $1",
            )
            .bind(endpoint)
            .bind(format!(
                "every attempt since {} failed",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
            .execute(&mut *conn)
            .await?;
            // Not the URL: other endpoints receive this event, and a URL may carry a token.
            let e = get(conn, endpoint).await?;
            events::record(
                conn,
                EventType::WebhookEndpointDisabled,
                None,
                json!({"endpoint_id": e.endpoint_id, "enabled": e.enabled,
                       "disabled_reason": e.disabled_reason, "failing_since": e.failing_since,
                       "event_types": e.event_types}),
                None,
            )
            .await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Every endpoint's sealed secrets (the current one and the previous one while it still signs),
/// for a reseal under a new key.
pub async fn sealed_secrets(
    conn: &mut PgConnection,
) -> Result<Vec<(Uuid, String, Option<String>)>> {
    db::leave_tenant(conn).await?;
    Ok(sqlx::query_as(
        "SELECT endpoint_id, secret_sealed, previous_secret_sealed FROM webhook_endpoints \
         ORDER BY endpoint_id FOR UPDATE",
    )
    .fetch_all(conn)
    .await?)
}

/// Replaces an endpoint's sealed secrets with the same secrets sealed again.
pub async fn reseal(
    conn: &mut PgConnection,
    id: Uuid,
    secret_sealed: &str,
    previous_secret_sealed: Option<&str>,
) -> Result<()> {
    db::leave_tenant(conn).await?;
    sqlx::query(
        "UPDATE webhook_endpoints SET secret_sealed = $2, previous_secret_sealed = $3 \
         WHERE endpoint_id = $1",
    )
    .bind(id)
    .bind(secret_sealed)
    .bind(previous_secret_sealed)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:c0a8:0101::1",
            "2002:7f00:0001::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn endpoint_urls_are_checked() {
        let strict = AddressPolicy::default();
        for bad in [
            "ftp://hooks.example/x",
            "https://u:p@hooks.example/x",
            "https://hooks.example/x#f",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "http://localhost:8080/x",
            "http://api.localhost/x",
            "https://0x7f000001/x",
            "https://2130706433/x",
            "https://169.254.169.254/latest",
            "not a url",
        ] {
            assert_eq!(
                parse_url(bad, strict).unwrap_err().field(),
                Some("url"),
                "{bad}"
            );
        }
        assert!(parse_url("https://hooks.example.com/psa?token=1", strict).is_ok());
        let loose = AddressPolicy {
            allow_private: true,
        };
        assert!(parse_url("http://127.0.0.1:9/x", loose).is_ok());
        assert_eq!(
            redacted("https://hooks.example.com/psa?token=secret"),
            "https://hooks.example.com/psa?..."
        );
        assert_eq!(
            description(Some("a\u{0}b")).unwrap_err().field(),
            Some("description")
        );
        assert_eq!(printable("ok\u{0}\u{1b}[31m", 10), "ok\u{fffd}\u{fffd}[31m");
        assert_eq!(printable(&"x".repeat(600), 512).len(), 512);
    }
}
