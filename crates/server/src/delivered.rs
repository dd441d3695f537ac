//! What one session has written of each conversation, and what its acks cover.
//!
//! A session writes each conversation's messages in seq order, with no hole and none
//! twice: it keeps, per conversation, the highest seq it has (written, or sent by the
//! user itself) with nothing missing below it. A live message just above it is written;
//! one at or below it is a duplicate (it came in the login's replay too); one further
//! above is a gap (a publication lost or overtaken in a cluster), which the session fills
//! from the store first. Because a conversation's seqs follow commit order, a message
//! with seq `s` committed means every seq below `s` has committed: a gap can be read at
//! once, with no wait.
//!
//! An ack by id covers, in each conversation, the written messages from the oldest
//! unacked one up to the first whose id is above the ack's: ids need not follow seqs
//! across the nodes of a cluster, and a delivered cursor must never pass a message the
//! client has not acked.

use std::collections::{HashMap, VecDeque};

use chat_proto::{ConvId, MsgId, Seq};

/// The most messages a session remembers as written and not acked. Past it the oldest
/// are forgotten: they stay pending and come again at the next login (at least once).
const UNACKED_MAX: usize = 8192;

/// Where a live message stands against what the session has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// At or below what the session has: do not write it again.
    Dup,
    /// Just above: write it.
    Next,
    /// Above a hole: fill from the store after this seq (`None`: from the user's
    /// delivered cursor), then write it.
    Gap(Option<Seq>),
}

/// One session's positions and unacked messages.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    convs: HashMap<ConvId, Seq>,
    /// Written and not acked: (id, conv, seq), in the order written (so each
    /// conversation's in seq order).
    unacked: VecDeque<(MsgId, ConvId, Seq)>,
}

impl Delivered {
    /// Where `seq` of `conv` stands. A conversation the session has nothing of yet is
    /// taken as it comes when `trust_first` (one node: the replay and the live stream
    /// meet in commit order), and checked against the store otherwise (a cluster).
    pub(crate) fn place(&self, conv: ConvId, seq: Seq, trust_first: bool) -> Place {
        match self.convs.get(&conv) {
            Some(&last) if seq <= last => Place::Dup,
            Some(&last) if seq == last + 1 => Place::Next,
            Some(&last) => Place::Gap(Some(last)),
            None if trust_first => Place::Next,
            None => Place::Gap(None),
        }
    }

    /// The session wrote message `id`, `seq` of `conv`.
    pub(crate) fn written(&mut self, id: MsgId, conv: ConvId, seq: Seq) {
        self.passed(conv, seq);
        if self.unacked.len() >= UNACKED_MAX {
            self.unacked.pop_front();
        }
        self.unacked.push_back((id, conv, seq));
    }

    /// The session has `seq` of `conv` without writing it (the user's own message).
    pub(crate) fn passed(&mut self, conv: ConvId, seq: Seq) {
        let last = self.convs.entry(conv).or_insert(seq);
        *last = (*last).max(seq);
    }

    /// The user sent `seq` of `conv` from this session: it has it, if nothing is missing
    /// below it.
    pub(crate) fn sent(&mut self, conv: ConvId, seq: Seq) {
        if let Some(last) = self.convs.get_mut(&conv) {
            if seq == *last + 1 {
                *last = seq;
            }
        }
    }

    /// The positions the session has, for a catch-up from the store.
    pub(crate) fn known(&self) -> &HashMap<ConvId, Seq> {
        &self.convs
    }

    /// An ack by id: the delivered cursor each conversation moves to.
    pub(crate) fn ack_id(&mut self, id: MsgId) -> Vec<(ConvId, Seq)> {
        let mut moved: Vec<(ConvId, Seq)> = Vec::new();
        let mut blocked: Vec<ConvId> = Vec::new();
        self.unacked.retain(|&(msg, conv, seq)| {
            if blocked.contains(&conv) {
                return true;
            }
            if msg > id {
                blocked.push(conv);
                return true;
            }
            match moved.iter_mut().find(|(c, _)| *c == conv) {
                Some((_, top)) => *top = (*top).max(seq),
                None => moved.push((conv, seq)),
            }
            false
        });
        if self.unacked.is_empty() {
            // A session that acks keeps no buffer between bursts.
            self.unacked = VecDeque::new();
        }
        moved
    }

    /// An ack of `conv` up to `seq`: forgets what it covers.
    pub(crate) fn ack_conv(&mut self, conv: ConvId, seq: Seq) {
        self.unacked.retain(|&(_, c, s)| c != conv || s > seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_messages_are_placed_against_what_the_session_has() {
        let mut d = Delivered::default();
        assert_eq!(d.place(7, 3, true), Place::Next);
        assert_eq!(d.place(7, 3, false), Place::Gap(None));
        d.written(100, 7, 3);
        assert_eq!(d.place(7, 3, false), Place::Dup);
        assert_eq!(d.place(7, 4, false), Place::Next);
        assert_eq!(d.place(7, 6, false), Place::Gap(Some(3)));
        d.sent(7, 4);
        assert_eq!(d.place(7, 5, false), Place::Next);
        // A send above a hole does not hide it.
        d.sent(7, 9);
        assert_eq!(d.place(7, 6, false), Place::Gap(Some(4)));
    }

    #[test]
    fn an_ack_by_id_stops_at_the_first_unacked_message_of_each_conversation() {
        let mut d = Delivered::default();
        // Conversation 1: seqs 1, 2, 3 with ids 10, 30, 20 (two nodes' id blocks).
        d.written(10, 1, 1);
        d.written(30, 1, 2);
        d.written(20, 1, 3);
        // Conversation 2: seq 1 with id 15.
        d.written(15, 2, 1);
        let mut moved = d.ack_id(25);
        moved.sort_unstable();
        // Seq 3 (id 20) is acked but seq 2 (id 30) is not: the cursor stops at 1.
        assert_eq!(moved, vec![(1, 1), (2, 1)]);
        assert_eq!(d.ack_id(30), vec![(1, 3)]);
        assert!(d.ack_id(MsgId::MAX).is_empty());
    }

    #[test]
    fn an_ack_by_conversation_forgets_what_it_covers() {
        let mut d = Delivered::default();
        d.written(1, 5, 1);
        d.written(2, 5, 2);
        d.written(3, 6, 1);
        d.ack_conv(5, 1);
        assert_eq!(d.ack_id(MsgId::MAX), vec![(5, 2), (6, 1)]);
    }
}
