//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`. HTTP requests are
//! labelled by route template (`/api/v1/companies/{company_id}`), never by raw path, so ids do
//! not explode the label space.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds), shared by every `*_duration_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The process's Prometheus recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), BUCKETS)
                .expect("valid buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            // Present from the start, so that a rate over it means something before the first.
            metrics::counter!("psa_login_failures_total").absolute(0);
            for reason in ["missing", "malformed", "timestamp", "signature"] {
                metrics::counter!("psa_billing_webhook_rejected_total", "reason" => reason)
                    .absolute(0);
            }
            metrics::counter!("psa_billing_unmatched_total").absolute(0);
            // Histogram samples queue up until drained into their buckets; without a regular
            // drain they grow without bound between scrapes and recording slows down.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

/// `GET /metrics`.
pub async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
}

/// The `method` label: the methods HTTP defines, anything else `other`. Clients choose the
/// method, and a label copied from them would let anyone grow `/metrics` and memory without
/// bound.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts and times every request, and logs it (method, route template, status, latency; never
/// headers or bodies, so no credential reaches the log).
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method()).to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.clone()),
        ("route", route.clone()),
        ("status", status.clone()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    tracing::info!(target: "psa_api::request", %method, %route, %status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    response
}
