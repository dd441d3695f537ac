//! Prometheus metrics: what an operator watches a running server by (`GET /metrics`).
//!
//! Counters and gauges are atomics that the session and op code bump as it goes; nothing
//! is computed until a scrape, and a scrape reads the few values that are cheaper to take
//! then (the number of sessions) from the hub. Names follow Prometheus conventions:
//! `chatd_` prefix, `_total` for counters, base units (seconds).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `transport`: `tcp`, `tls` or `ws`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

/// `method`: `password` or `token`; `result`: `ok`, `failed` or `rate_limited`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub method: &'static str,
    pub result: &'static str,
}

/// `kind`: `direct` or `group`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// `reason`: a `kicked` reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    /// Open client connections, by transport.
    pub connections: Family<TransportLabel, Gauge>,
    /// Logged-in sessions on this node (set at scrape time).
    pub sessions: Gauge,
    pub logins: Family<LoginLabels, Counter>,
    /// Messages stored, by kind (one per send, whatever the number of recipients).
    pub messages: Family<KindLabel, Counter>,
    /// Messages written to a recipient's connection (live, or replayed after a login).
    pub deliveries: Counter,
    /// From a message's commit to its write to a live recipient.
    pub delivery_latency: Histogram,
    /// Sessions the server ended, by reason.
    pub kicks: Family<ReasonLabel, Counter>,
    /// Requests refused for the request rate.
    pub rate_limited: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chatd");
        let connections = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        let sessions = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "sessions",
            "Logged-in sessions on this node",
            sessions.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register("logins", "Login attempts", logins.clone());
        let messages = Family::<KindLabel, Counter>::default();
        registry.register("messages", "Messages stored", messages.clone());
        let deliveries = Counter::<u64, AtomicU64>::default();
        registry.register(
            "deliveries",
            "Messages written to recipients' connections",
            deliveries.clone(),
        );
        // 0.1 ms to about 13 s.
        let delivery_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "delivery_latency_seconds",
            "From a message's commit to its write to a live recipient",
            delivery_latency.clone(),
        );
        let kicks = Family::<ReasonLabel, Counter>::default();
        registry.register("kicks", "Sessions ended by the server", kicks.clone());
        let rate_limited = Counter::<u64, AtomicU64>::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused for the request rate",
            rate_limited.clone(),
        );
        Metrics {
            registry,
            connections,
            sessions,
            logins,
            messages,
            deliveries,
            delivery_latency,
            kicks,
            rate_limited,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a login attempt.
    pub fn login(&self, method: &'static str, result: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { method, result })
            .inc();
    }

    /// Counts a connection open until the guard drops.
    pub fn connection(&self, transport: &'static str) -> ConnectionGuard {
        let gauge = self
            .connections
            .get_or_create(&TransportLabel { transport })
            .clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }
}

/// Decrements the connection gauge when the connection ends.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        let guard = metrics.connection("tcp");
        metrics.login("password", "ok");
        metrics
            .messages
            .get_or_create(&KindLabel { kind: "direct" })
            .inc();
        metrics.delivery_latency.observe(0.002);
        let text = metrics.render();
        assert!(
            text.contains("chatd_connections{transport=\"tcp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("chatd_logins_total{method=\"password\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("chatd_messages_total{kind=\"direct\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("chatd_delivery_latency_seconds_count 1"),
            "{text}"
        );
        drop(guard);
        assert!(metrics
            .render()
            .contains("chatd_connections{transport=\"tcp\"} 0"));
    }
}
