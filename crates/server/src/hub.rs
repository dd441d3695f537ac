//! Who is online on this node, and the queue into each session.
//!
//! The hub maps a user id to its one live session. Delivering never waits: a frame goes
//! into the session's bounded queue or, when the queue is full, the session is kicked as
//! a slow consumer (`kicked`, reason `slow_consumer`). Nothing is lost by it: messages
//! are in the store and stay pending until the user acks them, after its next login.
//!
//! In a cluster the hub also keeps a replica of who is online on the other nodes (kept
//! by [`crate::cluster`]), so that `online` flags and the `users` op cover the cluster
//! without a round trip.
//!
//! Locking: the maps are `DashMap`s; no lock is held across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chat_proto::types::User;
use chat_proto::{ConvId, MsgId, Seq, UserId};
use dashmap::DashMap;
use tokio::sync::Notify;

/// One frame on its way to sessions: the bytes of a whole line, shared by every recipient.
#[derive(Debug)]
pub struct Frame {
    /// The message id, for `msg` events.
    pub msg_id: Option<MsgId>,
    /// The message's conversation and seq, for `msg` events (what an ack by id moves).
    pub conv_seq: (ConvId, Seq),
    /// The JSON line, with its `\n`.
    pub bytes: Vec<u8>,
    /// The event adds or removes a friend of its recipient.
    pub changes_friends: bool,
    /// Not written: tells the session to read what is pending from the store (a cluster
    /// node that may have missed publications).
    pub catch_up: bool,
    /// When a message was committed (ms since the epoch), for the delivery latency; 0
    /// for other frames.
    pub ts_ms: i64,
}

impl Frame {
    /// A frame carrying message `id`, seq `seq` of conversation `conv`, committed at
    /// `ts_ms`.
    pub fn msg(id: MsgId, conv: ConvId, seq: Seq, ts_ms: i64, mut bytes: Vec<u8>) -> Arc<Frame> {
        bytes.push(b'\n');
        Arc::new(Frame {
            ts_ms,
            msg_id: Some(id),
            conv_seq: (conv, seq),
            catch_up: false,
            bytes,
            changes_friends: false,
        })
    }

    /// The marker that makes a session catch up from the store.
    pub fn catch_up() -> Arc<Frame> {
        Arc::new(Frame {
            ts_ms: 0,
            msg_id: None,
            conv_seq: (0, 0),
            bytes: Vec::new(),
            changes_friends: false,
            catch_up: true,
        })
    }

    /// A frame carrying any other event.
    pub fn event(event: &chat_proto::Event) -> Arc<Frame> {
        let mut bytes = event.to_json().into_bytes();
        bytes.push(b'\n');
        Arc::new(Frame {
            ts_ms: 0,
            msg_id: None,
            conv_seq: (0, 0),
            catch_up: false,
            bytes,
            changes_friends: matches!(
                event,
                chat_proto::Event::FriendAdded { .. } | chat_proto::Event::FriendRemoved { .. }
            ),
        })
    }
}

/// The way into one session: its queue of frames and its kick signal, in one allocation.
///
/// An idle session costs an `Arc` of this and nothing more: the queue holds no buffer
/// while it is empty. (A tokio `mpsc` channel with a `Notify` beside it cost about 900
/// bytes per session, a fifth of a logged-in connection.)
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    /// Woken on the first frame into an empty queue, and on a kick.
    wake: Notify,
    /// The most frames that may wait; one more and the session is a slow consumer.
    capacity: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Arc<Frame>>,
    /// Set when the session must end (the first reason given wins).
    kick_reason: Option<&'static str>,
    /// What the admin who kicked said, if anything.
    kick_message: Option<String>,
}

/// What a session's outbox has for it.
#[derive(Debug)]
pub enum Outgoing {
    /// The session must end, for this reason.
    Kicked(&'static str),
    /// Frames to write, oldest first.
    Frames(VecDeque<Arc<Frame>>),
}

impl Outbox {
    /// An outbox that holds at most `capacity` frames.
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            wake: Notify::new(),
            capacity,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        // Nothing panics while holding it; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame`; a full queue kicks the session as a slow consumer instead.
    pub fn push(&self, frame: Arc<Frame>) {
        let mut state = self.state();
        if state.kick_reason.is_some() {
            return;
        }
        if state.frames.len() >= self.capacity {
            state.kick_reason = Some(chat_proto::event::kick_reason::SLOW_CONSUMER);
            // Its frames will not be written; the messages among them stay pending.
            state.frames = VecDeque::new();
        } else {
            state.frames.push_back(frame);
            if state.frames.len() > 1 {
                return; // The session was woken by the first and has not taken it yet.
            }
        }
        drop(state);
        // notify_one stores a permit if the session is not waiting right now.
        self.wake.notify_one();
    }

    /// Ends the session with `reason`.
    pub fn kick(&self, reason: &'static str) {
        let mut state = self.state();
        if state.kick_reason.is_none() {
            state.kick_reason = Some(reason);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Ends the session because an admin said so.
    pub fn kick_by_admin(&self, message: Option<String>) {
        let mut state = self.state();
        if state.kick_reason.is_none() {
            state.kick_message = message;
        }
        drop(state);
        self.kick(chat_proto::event::kick_reason::ADMIN);
    }

    /// What the admin who kicked said.
    pub fn message(&self) -> Option<String> {
        self.state().kick_message.clone()
    }

    /// Takes up to `max` queued frames, oldest first, without waiting.
    pub fn take(&self, max: usize) -> VecDeque<Arc<Frame>> {
        take_front(&mut self.state().frames, max)
    }

    /// Waits for a kick (first) or for frames (up to `max` of them).
    pub async fn next(&self, max: usize) -> Outgoing {
        loop {
            {
                let mut state = self.state();
                if let Some(reason) = state.kick_reason {
                    return Outgoing::Kicked(reason);
                }
                if !state.frames.is_empty() {
                    return Outgoing::Frames(take_front(&mut state.frames, max));
                }
            }
            // A push between the check and here left a permit: this returns at once.
            self.wake.notified().await;
        }
    }
}

/// Takes up to `max` frames off the front of `frames`.
fn take_front(frames: &mut VecDeque<Arc<Frame>>, max: usize) -> VecDeque<Arc<Frame>> {
    if frames.len() <= max {
        // The whole queue, buffer and all: an idle session keeps none.
        std::mem::take(frames)
    } else {
        frames.drain(..max).collect()
    }
}

/// What the hub holds for one logged-in session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Tells apart two sessions of the same user.
    pub conn_id: u64,
    /// When the session logged in (ms since the epoch): of two logins, the later wins.
    pub since_ms: i64,
    pub user: User,
    pub outbox: Arc<Outbox>,
}

/// The sessions of this node, by user. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    sessions: DashMap<UserId, SessionHandle>,
    /// Users online on other nodes of the cluster.
    remote: DashMap<UserId, RemoteSession>,
    next_conn_id: AtomicU64,
}

/// A session on another node, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSession {
    pub node: Arc<str>,
    pub conn_id: u64,
    pub name: String,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Makes `handle` the user's session; returns the session it replaces, if any.
    pub fn register(&self, handle: SessionHandle) -> Option<SessionHandle> {
        self.inner.sessions.insert(handle.user.id, handle)
    }

    /// Removes the user's session if it is still `conn_id`; says whether it was.
    pub fn unregister(&self, user: UserId, conn_id: u64) -> bool {
        self.inner
            .sessions
            .remove_if(&user, |_, h| h.conn_id == conn_id)
            .is_some()
    }

    /// Whether the user has a session on this node.
    pub fn is_local(&self, user: UserId) -> bool {
        self.inner.sessions.contains_key(&user)
    }

    /// Whether the user is online here or, in a cluster, on another node.
    pub fn is_online(&self, user: UserId) -> bool {
        self.inner.sessions.contains_key(&user) || self.inner.remote.contains_key(&user)
    }

    /// Every user online, here or on another node.
    pub fn online_users(&self) -> Vec<User> {
        let mut users: Vec<User> = self
            .inner
            .sessions
            .iter()
            .map(|entry| entry.value().user.clone())
            .collect();
        users.extend(
            self.inner
                .remote
                .iter()
                .filter(|entry| !self.inner.sessions.contains_key(entry.key()))
                .map(|entry| User {
                    id: *entry.key(),
                    name: entry.value().name.clone(),
                }),
        );
        users.sort_by_key(|u| u.id);
        users
    }

    /// Every session of this node: (user, connection id).
    pub fn local_sessions(&self) -> Vec<(User, u64)> {
        self.inner
            .sessions
            .iter()
            .map(|entry| (entry.value().user.clone(), entry.value().conn_id))
            .collect()
    }

    /// Takes the user's session off this node if it logged in before `since_ms`, without
    /// it counting as going offline (the user is online elsewhere); returns it so that it
    /// can be told.
    pub fn evict_older(&self, user: UserId, since_ms: i64) -> Option<SessionHandle> {
        self.inner
            .sessions
            .remove_if(&user, |_, handle| handle.since_ms <= since_ms)
            .map(|(_, handle)| handle)
    }

    /// Notes a session on another node.
    pub fn set_remote(&self, user: UserId, session: RemoteSession) {
        self.inner.remote.insert(user, session);
    }

    /// Forgets a session on another node, if it is still the one noted.
    pub fn clear_remote(&self, user: UserId, node: &str, conn_id: u64) -> bool {
        self.inner
            .remote
            .remove_if(&user, |_, s| &*s.node == node && s.conn_id == conn_id)
            .is_some()
    }

    /// Forgets every session of a node; returns their users.
    pub fn drop_node(&self, node: &str) -> Vec<UserId> {
        let users: Vec<UserId> = self
            .inner
            .remote
            .iter()
            .filter(|entry| &*entry.value().node == node)
            .map(|entry| *entry.key())
            .collect();
        for user in &users {
            self.inner.remote.remove_if(user, |_, s| &*s.node == node);
        }
        users
    }

    /// Replaces the replica of the other nodes' sessions.
    pub fn replace_remote(&self, sessions: Vec<(UserId, RemoteSession)>) {
        self.inner.remote.clear();
        for (user, session) in sessions {
            self.inner.remote.insert(user, session);
        }
    }

    pub fn online_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Queues `frame` for `user` if online here, by the rule in the module docs; says
    /// whether the user has a session here.
    pub fn deliver(&self, user: UserId, frame: &Arc<Frame>) -> bool {
        match self.inner.sessions.get(&user) {
            Some(session) => {
                session.outbox.push(frame.clone());
                true
            }
            None => false,
        }
    }

    /// Queues `frame` for every session of this node.
    pub fn deliver_all(&self, frame: &Arc<Frame>) {
        for entry in self.inner.sessions.iter() {
            entry.value().outbox.push(frame.clone());
        }
    }

    /// Ends the user's session on this node on an admin's word; says whether there was one.
    pub fn kick_by_admin(&self, user: UserId, message: Option<String>) -> bool {
        match self.inner.sessions.get(&user) {
            Some(session) => {
                session.outbox.kick_by_admin(message);
                true
            }
            None => false,
        }
    }

    /// Ends every session of this node with `reason`.
    pub fn kick_all(&self, reason: &'static str) {
        for entry in self.inner.sessions.iter() {
            entry.value().outbox.kick(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::event::kick_reason;

    fn frame(id: MsgId) -> Arc<Frame> {
        Frame::msg(id, 1, id, 0, format!("{{\"id\":{id}}}").into_bytes())
    }

    fn ids(frames: &VecDeque<Arc<Frame>>) -> Vec<MsgId> {
        frames.iter().filter_map(|f| f.msg_id).collect()
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_batches_of_at_most_max() {
        let outbox = Outbox::new(10);
        for id in 1..=5 {
            outbox.push(frame(id));
        }
        match outbox.next(3).await {
            Outgoing::Frames(frames) => assert_eq!(ids(&frames), [1, 2, 3]),
            other => panic!("expected frames, got {other:?}"),
        }
        assert_eq!(ids(&outbox.take(10)), [4, 5]);
        assert!(outbox.take(10).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_on_a_push() {
        let outbox = Arc::new(Outbox::new(10));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.next(10).await }
        });
        tokio::task::yield_now().await;
        outbox.push(frame(7));
        match waiter.await.unwrap() {
            Outgoing::Frames(frames) => assert_eq!(ids(&frames), [7]),
            other => panic!("expected frames, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_outbox_kicks_as_slow_consumer_and_drops_its_frames() {
        let outbox = Outbox::new(2);
        outbox.push(frame(1));
        outbox.push(frame(2));
        outbox.push(frame(3));
        match outbox.next(10).await {
            Outgoing::Kicked(reason) => assert_eq!(reason, kick_reason::SLOW_CONSUMER),
            other => panic!("expected a kick, got {other:?}"),
        }
        assert!(outbox.take(10).is_empty());
        // Nothing more is queued once kicked.
        outbox.push(frame(4));
        assert!(outbox.take(10).is_empty());
    }

    #[tokio::test]
    async fn a_kick_comes_before_queued_frames_and_the_first_reason_wins() {
        let outbox = Outbox::new(10);
        outbox.push(frame(1));
        outbox.kick_by_admin(Some("bye".into()));
        outbox.kick(kick_reason::SHUTDOWN);
        match outbox.next(10).await {
            Outgoing::Kicked(reason) => assert_eq!(reason, kick_reason::ADMIN),
            other => panic!("expected a kick, got {other:?}"),
        }
        assert_eq!(outbox.message().as_deref(), Some("bye"));
    }
}
