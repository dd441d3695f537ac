//! What a run found: one [`Record`], printed as a human summary and as one line of JSON.
//! Children of `--procs` print theirs with the latency histogram attached (HdrHistogram
//! V2, base64); the parent merges them with [`Record::merge`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::tally::new_histogram;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram in microseconds.
    pub fn of(hist: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: hist.len(),
            p50: ms(hist.value_at_quantile(0.50)),
            p99: ms(hist.value_at_quantile(0.99)),
            p999: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    }
}

/// A histogram as base64 of its V2 serialization.
pub fn encode_histogram(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if V2Serializer::new().serialize(hist, &mut bytes).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads back [`encode_histogram`]'s text.
pub fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    let hist: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
    Ok(hist)
}

/// One run's results. Counters are plain numbers (0 when they do not apply); fields of
/// one scenario only are optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    pub scenario: String,
    /// No loss, no duplicate, no drop, no error, every user set up.
    pub ok: bool,
    pub procs: u64,
    /// Users (= connections) asked for.
    pub users: u64,
    /// Users logged in and synced at the start.
    pub logged_in: u64,
    /// Time to log every user in (the slowest process).
    pub login_secs: f64,
    pub logins_token: u64,
    pub logins_password: u64,
    pub registered: u64,
    /// Users that could not be set up, by reason.
    pub setup_errors: BTreeMap<String, u64>,
    /// Messages left pending by earlier runs, received at login or later.
    pub stray: u64,

    /// Target message rate (messages sent per second, all senders together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How long traffic ran, or connections were held.
    pub duration_secs: f64,
    /// Messages the server confirmed (`ok` replies).
    pub sent: u64,
    /// Messages due that were never sent (too many in flight).
    pub unsent: u64,
    /// Failed requests, by `op:code`.
    pub errors: BTreeMap<String, u64>,
    /// Deliveries expected (each confirmed message times its recipients).
    pub expected: u64,
    /// Distinct messages received.
    pub delivered: u64,
    /// Confirmed messages never received.
    pub lost: u64,
    /// Messages received more than once (extra copies).
    pub duplicated: u64,
    /// Received, but their sender never got the server's confirmation.
    pub unconfirmed: u64,
    /// Deliveries per second, from the start of traffic to the last delivery.
    pub throughput: f64,
    /// Seconds from the start of traffic to the last delivery (or the end of the drain).
    pub active_secs: f64,
    /// Delivery latency (now minus the time the message was due to be sent), or for
    /// `storm` the time each user took to be back and synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// The latency histogram (children only; the parent merges them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hist: Option<String>,

    /// Connections that were kicked or closed while they should have stayed.
    pub dropped: u64,
    /// Connections still logged in at the end of `conns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    /// Server RSS before connecting and once all were logged in, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_conn: Option<f64>,

    /// `storm`: seconds from the drop until every user was back and synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm_secs: Option<f64>,
    /// `storm`: users back and synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnected: Option<u64>,

    /// `group`: the group, its members and senders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<u64>,

    /// `chat --sweep`: the p99 bound and the highest rate that held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_bound_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_rate: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Record>,
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

impl Record {
    /// Fills `lost`, `throughput` and the latency summary from the counters and `hist`.
    pub fn finish_counts(&mut self, hist: Option<&Histogram<u64>>) {
        let confirmed = self.delivered.saturating_sub(self.unconfirmed);
        self.lost = self.expected.saturating_sub(confirmed);
        self.throughput = if self.active_secs > 0.0 {
            self.delivered as f64 / self.active_secs
        } else {
            0.0
        };
        if let Some(hist) = hist {
            self.latency_ms = (!hist.is_empty()).then(|| Latency::of(hist));
        }
    }

    /// Sets the server's RSS before connecting and once all were logged in, and the
    /// growth per logged-in connection.
    pub fn set_rss(&mut self, (before, after): (Option<u64>, Option<u64>)) {
        self.rss_before = before;
        self.rss_after = after;
        self.rss_per_conn = match (before, after) {
            (Some(b), Some(a)) if self.logged_in > 0 => {
                Some((a as f64 - b as f64) / self.logged_in as f64)
            }
            _ => None,
        };
    }

    /// Whether nothing went wrong: every user set up, nothing lost, duplicated, dropped,
    /// refused or left unsent.
    pub fn clean(&self) -> bool {
        self.setup_errors.is_empty()
            && self.lost == 0
            && self.duplicated == 0
            && self.dropped == 0
            && self.errors.is_empty()
            && self.unsent == 0
            && self.logged_in == self.users
    }

    /// Merges the records of `--procs` children into one (histograms included).
    pub fn merge(children: &[Record]) -> anyhow::Result<Record> {
        let mut all = Record {
            procs: children.len() as u64,
            ..Record::default()
        };
        let mut hist = new_histogram();
        let mut any_hist = false;
        for c in children {
            all.scenario.clone_from(&c.scenario);
            all.users += c.users;
            all.logged_in += c.logged_in;
            all.login_secs = all.login_secs.max(c.login_secs);
            all.logins_token += c.logins_token;
            all.logins_password += c.logins_password;
            all.registered += c.registered;
            add_map(&mut all.setup_errors, &c.setup_errors);
            all.stray += c.stray;
            all.rate = c.rate;
            all.duration_secs = all.duration_secs.max(c.duration_secs);
            all.sent += c.sent;
            all.unsent += c.unsent;
            add_map(&mut all.errors, &c.errors);
            all.expected += c.expected;
            all.delivered += c.delivered;
            all.duplicated += c.duplicated;
            all.unconfirmed += c.unconfirmed;
            all.active_secs = all.active_secs.max(c.active_secs);
            all.dropped += c.dropped;
            all.held = add_opt(all.held, c.held);
            all.storm_secs = max_opt(all.storm_secs, c.storm_secs);
            all.reconnected = add_opt(all.reconnected, c.reconnected);
            all.group = all.group.or(c.group);
            all.members = add_opt(all.members, c.members);
            all.senders = add_opt(all.senders, c.senders);
            if let Some(text) = &c.hist {
                hist.add(decode_histogram(text)?)?;
                any_hist = true;
            }
        }
        all.finish_counts(any_hist.then_some(&hist));
        all.ok = all.clean();
        Ok(all)
    }

    /// The record as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A summary for a person.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let verdict = if self.ok { "OK" } else { "NOT OK" };
        let _ = writeln!(s, "== chat-bench {} ({verdict}) ==", self.scenario);
        let _ = writeln!(
            s,
            "users {}, logged in {} in {:.2} s (token {}, password {}, registered {}), procs {}",
            self.users,
            self.logged_in,
            self.login_secs,
            self.logins_token,
            self.logins_password,
            self.registered,
            self.procs.max(1),
        );
        if !self.setup_errors.is_empty() {
            let _ = writeln!(s, "setup failures: {:?}", self.setup_errors);
        }
        if let (Some(before), Some(after)) = (self.rss_before, self.rss_after) {
            let per = self.rss_per_conn.unwrap_or(0.0);
            let _ = writeln!(
                s,
                "server RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per connection ({:.2} GiB per million)",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                per,
                per * 1e6 / 1073741824.0
            );
        }
        if let Some(held) = self.held {
            let _ = writeln!(
                s,
                "held {held} of {} for {:.0} s, dropped {}",
                self.logged_in, self.duration_secs, self.dropped
            );
        }
        if let Some(secs) = self.storm_secs {
            let _ = writeln!(
                s,
                "storm: {} of {} back and synced in {:.3} s",
                self.reconnected.unwrap_or(0),
                self.logged_in,
                secs
            );
        }
        if let (Some(group), Some(members)) = (self.group, self.members) {
            let _ = writeln!(
                s,
                "group {group}: {members} members, {} senders",
                self.senders.unwrap_or(0)
            );
        }
        if let Some(rate) = self.rate {
            let _ = writeln!(
                s,
                "rate {rate:.0} msg/s for {:.1} s: sent {} (unsent {}), expected {} deliveries",
                self.duration_secs, self.sent, self.unsent, self.expected
            );
            let _ = writeln!(
                s,
                "delivered {}, lost {}, duplicated {}, unconfirmed {}, stray {}; {:.0} deliveries/s",
                self.delivered,
                self.lost,
                self.duplicated,
                self.unconfirmed,
                self.stray,
                self.throughput
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors: {:?}", self.errors);
        }
        if let Some(l) = &self.latency_ms {
            let _ = writeln!(
                s,
                "latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3}, n {})",
                l.p50, l.p99, l.p999, l.max, l.mean, l.count
            );
        }
        if let Some(bound) = self.p99_bound_ms {
            for step in &self.steps {
                let l = step.latency_ms.clone().unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  step {:>9.0} msg/s: {} delivered {:.0}/s, lost {}, dup {}, errors {}, unsent {}, p99 {:.3} ms",
                    step.rate.unwrap_or(0.0),
                    if step.ok { "held  " } else { "failed" },
                    step.throughput,
                    step.lost,
                    step.duplicated,
                    step.errors.values().sum::<u64>(),
                    step.unsent,
                    l.p99
                );
            }
            match self.held_rate {
                Some(rate) => {
                    let _ = writeln!(
                        s,
                        "highest rate held (p99 <= {bound} ms, no loss): {rate:.0} msg/s"
                    );
                }
                None => {
                    let _ = writeln!(s, "no rate held (p99 <= {bound} ms, no loss)");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_round_trip() {
        let mut hist = new_histogram();
        for us in [100, 200, 5000] {
            hist.record(us).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&hist)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.max(), hist.max());
    }

    #[test]
    fn merging_children_adds_counts_and_histograms() {
        let child = |delivered: u64, us: u64| {
            let mut hist = new_histogram();
            for _ in 0..delivered {
                hist.record(us).unwrap();
            }
            Record {
                scenario: "chat".into(),
                users: 2,
                logged_in: 2,
                rate: Some(10.0),
                sent: 10,
                expected: 10,
                delivered,
                active_secs: 1.0,
                hist: Some(encode_histogram(&hist)),
                ..Record::default()
            }
        };
        let all = Record::merge(&[child(10, 1000), child(9, 3000)]).unwrap();
        assert_eq!(
            (all.users, all.sent, all.delivered, all.lost),
            (4, 20, 19, 1)
        );
        assert!(!all.ok);
        let latency = all.latency_ms.clone().unwrap();
        assert_eq!(latency.count, 19);
        assert!((latency.max - 3.0).abs() < 0.01);
        let line = all.to_json_line();
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back.lost, 1);
    }
}
