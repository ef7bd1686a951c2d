//! Extractors whose rejections follow the error contract: malformed JSON, wrong types, unknown
//! fields and enum values, bad ids and oversized bodies all become a 4xx `validation_error`
//! naming the offending field. Input values are never echoed back (a misplaced password would
//! otherwise appear in an error).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// Who is on the other end of a sign-in: the client's address (the TCP peer) and what it says
/// it is (`User-Agent`), kept with the session it opens.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: std::net::SocketAddr,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no peer address")))?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect());
        Ok(ClientInfo { peer, user_agent })
    }
}

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::BadRequest {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                field: None,
                message: "The body must be JSON (Content-Type: application/json)".into(),
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BadRequest {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    field: None,
                    message: format!("The body must be at most {} bytes", crate::MAX_BODY_BYTES),
                }
            } else {
                ApiError::bad_request(None, "The body could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body that may be left out: none without a `Content-Type` (and empty), else JSON as
/// [`ApiJson`].
impl<S, T> axum::extract::OptionalFromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let h = req.headers();
        let no_body = !h.contains_key(header::TRANSFER_ENCODING)
            && h.get(header::CONTENT_LENGTH)
                .is_none_or(|l| l.as_bytes() == b"0");
        if no_body && !h.contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <ApiJson<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Deserialises JSON, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = describe(&inner.to_string(), inner.classify());
        let field = match message.1 {
            Some(missing) => Some(if path == "." {
                missing
            } else {
                format!("{path}.{missing}")
            }),
            None if path == "." || path.is_empty() => None,
            None => Some(path),
        };
        ApiError::bad_request(field, message.0)
    })
}

/// A message for a serde error, without the input value it may quote; and the name of a
/// missing field, which serde reports in the message rather than the path.
fn describe(raw: &str, category: serde_json::error::Category) -> (String, Option<String>) {
    use serde_json::error::Category;
    match category {
        Category::Syntax | Category::Eof => ("The body is not valid JSON".into(), None),
        Category::Io => ("The body could not be read".into(), None),
        Category::Data => {
            if let Some(rest) = raw.strip_prefix("missing field `") {
                let name = rest.split('`').next().unwrap_or_default().to_owned();
                return ("This field is required".into(), Some(name));
            }
            if raw.starts_with("unknown field") {
                return ("Unknown field".into(), None);
            }
            if let Some(idx) = raw.find(", expected ") {
                let expected = raw[idx + ", expected ".len()..]
                    .split(" at line ")
                    .next()
                    .unwrap_or_default();
                return (format!("Invalid value: expected {expected}"), None);
            }
            ("Invalid value".into(), None)
        }
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = query_to(query);
        de.map(ApiQuery)
    }
}

fn query_to<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    // Query strings go through a JSON object so that the same field-naming errors apply.
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        let value = match v.as_str() {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => match v.parse::<u64>() {
                Ok(n) if !k.ends_with("_id") && k != "cursor" => serde_json::Value::from(n),
                _ => serde_json::Value::String(v),
            },
        };
        map.insert(k, value);
    }
    parse_json(&serde_json::to_vec(&map).map_err(ApiError::internal)?)
}

/// The id of the addressed resource, from the path, typed (`PathId<TenantId>`): a malformed id
/// is a 404, as an unknown one, so no handler parses ids.
pub struct PathId<T>(pub T);

/// Two ids from the path (`/webhook-endpoints/{id}/deliveries/{delivery_id}`).
pub struct PathIds<A, B>(pub A, pub B);

/// The path's segments as ids, or `None` when one is not a UUID.
pub(crate) async fn path_ids<S: Send + Sync>(parts: &mut Parts, state: &S) -> Option<Vec<Uuid>> {
    let Path(raw) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .ok()?;
    raw.iter().map(|(_, v)| Uuid::parse_str(v).ok()).collect()
}

impl<S, T> FromRequestParts<S> for PathId<T>
where
    S: Send + Sync,
    T: From<Uuid>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match path_ids(parts, state).await.as_deref() {
            Some([id]) => Ok(PathId(T::from(*id))),
            _ => Err(ApiError::NotFound),
        }
    }
}

impl<S, A, B> FromRequestParts<S> for PathIds<A, B>
where
    S: Send + Sync,
    A: From<Uuid>,
    B: From<Uuid>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match path_ids(parts, state).await.as_deref() {
            Some([a, b]) => Ok(PathIds(A::from(*a), B::from(*b))),
            _ => Err(ApiError::NotFound),
        }
    }
}
