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

/// `code`: an error code of the protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    /// `process_*`, without the `chatd_` prefix.
    process: Registry,
    /// Open client connections, by transport.
    pub connections: Family<TransportLabel, Gauge>,
    /// Logged-in sessions on this node (set at scrape time).
    pub sessions: Gauge,
    pub logins: Family<LoginLabels, Counter>,
    /// Messages stored, by kind (one per send, whatever the number of recipients).
    pub messages: Family<KindLabel, Counter>,
    /// The two series of `messages`, taken once: a send bumps one without a map lookup.
    pub direct_messages: Counter,
    pub group_messages: Counter,
    /// Messages written to a recipient's connection (live, or replayed after a login).
    pub deliveries: Counter,
    /// From commit to write, for the oldest message of each write to a live recipient.
    pub delivery_latency: Histogram,
    /// Sessions the server ended, by reason.
    pub kicks: Family<ReasonLabel, Counter>,
    /// Requests refused for the request rate.
    pub rate_limited: Counter,
    /// Error replies, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// The process's resident memory, open files and CPU time (set at scrape time).
    pub resident_memory: Gauge,
    pub open_fds: Gauge,
    pub cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
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
            "From commit to write, for the oldest message of each write to a live recipient",
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
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register("errors", "Error replies, by code", errors.clone());
        // The process's own figures, under the names Prometheus's clients use.
        let mut process = Registry::default();
        let resident_memory = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        process.register(
            "process_resident_memory_bytes",
            "Resident memory",
            resident_memory.clone(),
        );
        let open_fds = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        process.register(
            "process_open_fds",
            "Open file descriptors",
            open_fds.clone(),
        );
        let cpu_seconds = Gauge::<f64, AtomicU64>::default();
        process.register(
            "process_cpu_seconds_total",
            "User and system CPU time",
            cpu_seconds.clone(),
        );
        let direct_messages = messages
            .get_or_create(&KindLabel { kind: "direct" })
            .clone();
        let group_messages = messages.get_or_create(&KindLabel { kind: "group" }).clone();
        Metrics {
            registry,
            process,
            direct_messages,
            group_messages,
            connections,
            sessions,
            logins,
            messages,
            deliveries,
            delivery_latency,
            kicks,
            rate_limited,
            errors,
            resident_memory,
            open_fds,
            cpu_seconds,
        }
    }

    /// Counts an error reply.
    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.read_process();
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.process);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// Reads the process figures from /proc (Linux); leaves them as they were elsewhere.
    fn read_process(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let rss_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
            if let Some(kib) = rss_kib {
                self.resident_memory.set(kib * 1024);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // utime and stime: fields 14 and 15, counted after the ")" that ends the name.
            let ticks: Vec<f64> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
                .into_iter()
                .flatten()
                .filter_map(|v| v.parse().ok())
                .collect();
            if ticks.len() == 2 {
                // Linux reports these in USER_HZ, 100 a second on every common platform.
                self.cpu_seconds.set((ticks[0] + ticks[1]) / 100.0);
            }
        }
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
