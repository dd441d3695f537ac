//! HTTP beside the chat listener (`--http ADDR`): `GET /` (the web client, see [`web`]),
//! `GET /ws` (the chat protocol over WebSocket, see [`ws`]), and the operator's endpoints: `GET /metrics` (Prometheus
//! text), `GET /healthz` (the process serves) and `GET /readyz` (the store answers and,
//! in a cluster, Redis does: a balancer sends clients here only then).
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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::Ctx;

mod tls;
mod web;
mod ws;

/// What WebSocket sessions share with TCP ones: the connection limit, the shutdown
/// signal, and the tracker shutdown waits on.
pub(crate) struct Gate {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) stop: CancellationToken,
    pub(crate) sessions: TaskTracker,
}

/// The handlers' state.
pub(crate) struct Shared {
    ctx: Arc<Ctx>,
    gate: Gate,
}

/// How long a readiness check waits for the store or Redis.
const READY_WAIT: Duration = Duration::from_secs(2);

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
    gate: Gate,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared { ctx, gate });
    let app = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(web::routes())
        .with_state(shared);
    let app = app.into_make_service_with_connect_info::<tls::Peer>();
    let stopped = async move { stop.cancelled().await };
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
        Some(acceptor) => match tls::TlsListener::new(listener, acceptor) {
            Ok(listener) => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "http: the listener failed");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let ctx = &shared.ctx;
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

async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let ctx = &shared.ctx;
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
