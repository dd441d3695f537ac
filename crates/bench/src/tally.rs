//! Counting what arrived: every received message is checked against what was seen
//! before on its stream (a sender, or a sender-receiver pair), so duplicates are found,
//! and compared at the end with what the senders had confirmed, so losses are found.
//!
//! A run shares a few [`Tally`] shards between its connection tasks (a receiver always
//! uses the same shard, so a stream lives in one shard) and merges them at the end.

use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::bits::Bits;

/// The highest latency the histograms hold, in microseconds (longer ones are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// What [`Tally::record`] made of one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The first time this message arrived.
    Fresh,
    /// It had arrived before on this stream.
    Duplicate,
}

/// Received messages of some streams, with their latencies.
#[derive(Debug)]
pub struct Tally {
    /// Per stream, the sequence numbers received.
    seen: Vec<Bits>,
    /// Latency of fresh receipts, in microseconds.
    pub latency: Histogram<u64>,
    /// Messages received for the first time.
    pub delivered: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages that were not this run's (left pending by an earlier run) or unreadable.
    pub stray: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            seen: Vec::new(),
            latency: new_histogram(),
            delivered: 0,
            duplicates: 0,
            stray: 0,
        }
    }

    /// Records message `seq` of `stream`, received `latency_ns` after it was due to be
    /// sent. Duplicates are counted, and their latency is not recorded.
    pub fn record(&mut self, stream: usize, seq: u64, latency_ns: u64) -> Receipt {
        if stream >= self.seen.len() {
            self.seen.resize(stream + 1, Bits::new());
        }
        if self.seen[stream].insert(seq) {
            self.delivered += 1;
            self.latency.saturating_record((latency_ns / 1000).max(1));
            Receipt::Fresh
        } else {
            self.duplicates += 1;
            Receipt::Duplicate
        }
    }

    /// A message that is not this run's.
    pub fn record_stray(&mut self) {
        self.stray += 1;
    }

    /// The sequence numbers received on `stream`.
    pub fn seen(&self, stream: usize) -> Option<&Bits> {
        self.seen.get(stream)
    }

    /// Compares `stream` with what its sender had confirmed (`sent`): how many confirmed
    /// messages never arrived (lost), and how many arrived that were not confirmed (the
    /// sender's reply never came, e.g. its connection dropped).
    pub fn compare(&self, stream: usize, sent: &Bits) -> Comparison {
        let empty = Bits::new();
        let seen = self.seen.get(stream).unwrap_or(&empty);
        Comparison {
            lost: sent.count_missing_from(seen),
            unconfirmed: seen.count_missing_from(sent),
        }
    }

    /// Adds `other` in. Streams seen in both are united (a message in both counts as a
    /// duplicate).
    pub fn merge(&mut self, other: &Tally) {
        // Histograms of the same bounds always add.
        let _ = self.latency.add(&other.latency);
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.stray += other.stray;
        if other.seen.len() > self.seen.len() {
            self.seen.resize(other.seen.len(), Bits::new());
        }
        for (stream, bits) in other.seen.iter().enumerate() {
            let both = bits.len() - bits.count_missing_from(&self.seen[stream]);
            self.duplicates += both;
            self.delivered -= both;
            self.seen[stream].union_with(bits);
        }
    }
}

/// How a stream's receipts compare with what its sender had confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Comparison {
    /// Confirmed by the server, never received.
    pub lost: u64,
    /// Received, but the sender never got the server's confirmation.
    pub unconfirmed: u64,
}

/// A few tallies behind locks, so that connection tasks on several threads rarely wait
/// for one another. A receiver always records into the same shard.
#[derive(Debug)]
pub struct Shards {
    shards: Vec<Mutex<Tally>>,
}

impl Shards {
    /// `n` empty shards (at least one).
    pub fn new(n: usize) -> Shards {
        Shards {
            shards: (0..n.max(1)).map(|_| Mutex::new(Tally::new())).collect(),
        }
    }

    /// Runs `f` on the shard of receiver `receiver`.
    pub fn with<R>(&self, receiver: usize, f: impl FnOnce(&mut Tally) -> R) -> R {
        let shard = &self.shards[receiver % self.shards.len()];
        let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// All shards merged into one tally.
    pub fn merged(&self) -> Tally {
        let mut all = Tally::new();
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seqs: impl IntoIterator<Item = u64>) -> Bits {
        let mut bits = Bits::new();
        for seq in seqs {
            bits.insert(seq);
        }
        bits
    }

    #[test]
    fn counts_each_message_once_and_flags_duplicates() {
        let mut tally = Tally::new();
        assert_eq!(tally.record(0, 1, 1_000_000), Receipt::Fresh);
        assert_eq!(tally.record(0, 2, 2_000_000), Receipt::Fresh);
        assert_eq!(tally.record(0, 1, 3_000_000), Receipt::Duplicate);
        // The same sequence on another stream is another message.
        assert_eq!(tally.record(1, 1, 1_000_000), Receipt::Fresh);
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.latency.len(), 3);
        assert!(tally.latency.equivalent(tally.latency.max(), 2000)); // 2 ms
    }

    #[test]
    fn finds_gaps_against_what_was_confirmed() {
        let mut tally = Tally::new();
        for seq in [0, 1, 3, 4, 9] {
            tally.record(0, seq, 10);
        }
        // Confirmed 0..8: 2, 5, 6, 7 never came; 9 came without a confirmation.
        let cmp = tally.compare(0, &sent(0..8));
        assert_eq!(
            cmp,
            Comparison {
                lost: 4,
                unconfirmed: 1
            }
        );
        // A stream that received nothing lost everything.
        assert_eq!(tally.compare(5, &sent(0..3)).lost, 3);
    }

    #[test]
    fn merging_adds_counts_and_finds_duplicates_across_shards() {
        let mut a = Tally::new();
        a.record(0, 1, 1000);
        a.record(0, 1, 1000);
        let mut b = Tally::new();
        b.record(0, 1, 1000);
        b.record(0, 2, 1000);
        b.record_stray();
        a.merge(&b);
        assert_eq!(a.delivered, 2);
        assert_eq!(a.duplicates, 2);
        assert_eq!(a.stray, 1);
        assert_eq!(a.compare(0, &sent(1..3)).lost, 0);
    }

    #[test]
    fn shards_merge_into_one() {
        let shards = Shards::new(4);
        for receiver in 0..8 {
            shards.with(receiver, |t| t.record(receiver, 0, 5_000));
        }
        let all = shards.merged();
        assert_eq!(all.delivered, 8);
        assert_eq!(all.duplicates, 0);
    }
}
