//! The operator's HTTP endpoints, beside the chat listener (`--http ADDR`):
//! `GET /metrics` (Prometheus text), `GET /healthz` (the process serves) and
//! `GET /readyz` (the store answers and, in a cluster, Redis does: a balancer sends
//! clients here only then).
//!
//! Off by default: an operator chooses where it listens (usually an address only the
//! monitoring network reaches), since metrics show how busy the server is.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Ctx;

/// How long a readiness check waits for the store or Redis.
const READY_WAIT: Duration = Duration::from_secs(2);

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ctx);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "http: the listener failed");
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    ctx.metrics.sessions.set(ctx.hub.online_count() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> (StatusCode, String) {
    let store = tokio::time::timeout(READY_WAIT, ctx.store.user(0)).await;
    if !matches!(store, Ok(Ok(_))) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store does not answer\n".into(),
        );
    }
    if let Some(cluster) = &ctx.config.cluster {
        if !redis_answers(&cluster.redis_url).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis does not answer\n".into(),
            );
        }
    }
    (StatusCode::OK, "ready\n".into())
}

async fn redis_answers(url: &str) -> bool {
    let ping = async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(tokio::time::timeout(READY_WAIT, ping).await, Ok(Some(_)))
}
