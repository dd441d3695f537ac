//! Puts a cluster's commit log back in order on one node.
//!
//! Every node's writer assigns message ids under one PostgreSQL lock, so batches are
//! contiguous: each one's `after` is the previous one's `last`. Batches reach a node from
//! its own store and, for the other nodes' batches, through Redis, in any order. The
//! follower passes them on strictly in id order. A missing range is waited for briefly
//! (the batch may still be on its way); then it is read from the store, where it
//! committed before it was announced. So a node that died between commit and announce,
//! or a Redis that dropped a publication, costs latency, never a message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::MsgId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Commit, CommitBatch, Store};

/// How long a gap may wait for its batch before it is read from the store.
const GAP_WAIT: Duration = Duration::from_millis(300);
/// How often the follower checks for gaps and for batches that never came.
const TICK: Duration = Duration::from_millis(100);
/// How often it asks the store for its newest id (a gap at the end shows only there).
const HEAD_POLL: Duration = Duration::from_secs(1);

/// Orders batches from `input` into `out`, starting after id `last`.
pub async fn run(
    mut input: mpsc::Receiver<CommitBatch>,
    out: mpsc::Sender<CommitBatch>,
    store: Arc<dyn Store>,
    last: MsgId,
    stop: CancellationToken,
) {
    let mut follower = Follower {
        out,
        store,
        last,
        waiting: BTreeMap::new(),
        gap_since: None,
        behind_since: None,
        last_poll: Instant::now(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            batch = input.recv() => match batch {
                Some(batch) => {
                    if follower.accept(batch).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                if follower.check().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The dispatcher is gone.
struct Closed;

struct Follower {
    out: mpsc::Sender<CommitBatch>,
    store: Arc<dyn Store>,
    /// Everything up to this id has been passed on.
    last: MsgId,
    /// Batches that came early, by their `after`.
    waiting: BTreeMap<MsgId, CommitBatch>,
    /// Since when the first waiting batch has been waiting.
    gap_since: Option<Instant>,
    /// Since when the store has been ahead of `last` with nothing waiting.
    behind_since: Option<Instant>,
    last_poll: Instant,
}

impl Follower {
    async fn accept(&mut self, batch: CommitBatch) -> Result<(), Closed> {
        if batch.last <= self.last {
            return Ok(()); // Seen already (or read from the store).
        }
        if batch.after > self.last {
            self.gap_since.get_or_insert_with(Instant::now);
            self.waiting.insert(batch.after, batch);
            return Ok(());
        }
        self.pass(batch).await?;
        self.drain().await
    }

    /// Passes on a batch that starts at or before `last`, without what was passed already.
    async fn pass(&mut self, mut batch: CommitBatch) -> Result<(), Closed> {
        if batch.after < self.last {
            // Part of it was read from the store: keep only the newer messages, and have
            // member lists reloaded, since changes in the overlap may be missing.
            let last = self.last;
            batch.commits.retain(|c| match c {
                Commit::Msg(msg) => msg.id > last,
                Commit::Joined { at, .. } | Commit::Left { at, .. } => *at > last,
                Commit::GroupDeleted { at, .. } => *at > last,
                Commit::ForgetGroups => true,
            });
            batch.commits.insert(0, Commit::ForgetGroups);
            batch.after = last;
        }
        self.last = batch.last;
        self.out.send(batch).await.map_err(|_| Closed)
    }

    /// Passes on waiting batches that now follow on.
    async fn drain(&mut self) -> Result<(), Closed> {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > self.last {
                break;
            }
            let batch = entry.remove();
            if batch.last > self.last {
                self.pass(batch).await?;
            }
        }
        self.gap_since = (!self.waiting.is_empty()).then(Instant::now);
        Ok(())
    }

    async fn check(&mut self) -> Result<(), Closed> {
        if let Some(since) = self.gap_since {
            if since.elapsed() >= GAP_WAIT {
                let upto = self.waiting.keys().next().copied().unwrap_or(self.last);
                self.fill(upto).await?;
                self.drain().await?;
            }
            return Ok(());
        }
        if self.last_poll.elapsed() < HEAD_POLL {
            return Ok(());
        }
        self.last_poll = Instant::now();
        match self.store.last_msg_id().await {
            Ok(head) if head > self.last => match self.behind_since {
                // Behind for a whole poll with nothing arriving: the batch is lost.
                Some(since) if since.elapsed() >= HEAD_POLL => {
                    self.behind_since = None;
                    self.fill(head).await?;
                }
                Some(_) => {}
                None => self.behind_since = Some(Instant::now()),
            },
            Ok(_) => self.behind_since = None,
            Err(e) => tracing::warn!(error = %e, "cluster: cannot read the log head"),
        }
        Ok(())
    }

    /// Reads the messages in `last + 1 ..= upto` from the store and passes them on.
    async fn fill(&mut self, upto: MsgId) -> Result<(), Closed> {
        if upto <= self.last {
            return Ok(());
        }
        match self.store.messages_between(self.last, upto).await {
            Ok(messages) => {
                tracing::info!(
                    after = self.last,
                    upto,
                    messages = messages.len(),
                    "cluster: filled a gap in the log from the store"
                );
                let mut commits = vec![Commit::ForgetGroups];
                commits.extend(messages.into_iter().map(|m| Commit::Msg(Arc::new(m))));
                let batch = CommitBatch {
                    after: self.last,
                    last: upto,
                    commits,
                };
                self.last = upto;
                self.out.send(batch).await.map_err(|_| Closed)
            }
            Err(e) => {
                // Try again at the next tick.
                tracing::warn!(error = %e, "cluster: cannot fill a gap in the log");
                Ok(())
            }
        }
    }
}
