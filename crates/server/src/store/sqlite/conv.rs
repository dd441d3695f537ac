//! Conversations on SQLite: seqs, cursors, `cmid`s, and the reads built on them
//! (pending messages, the conversation list, `sync`, the members to tell of typing).
//!
//! The writer gives each message the next seq of its conversation from a cache it keeps
//! (`Writer::seqs`), and writes each conversation it touched once per batch, just before
//! COMMIT. One writer per store, so a seq is never given out twice.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::types::{ConvPos, ConvSummary, ConvWith, Friend, Msg, UNREAD_CAP};
use chat_proto::{ConvId, GroupId, MsgId, Seq, UserId};
use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, row_to_msg, sql_error, Writer, MSG_SELECT};
use crate::store::writes::AckMap;
use crate::store::{Conversation, ReadMark, StoreError, StoreResult};

/// How long a client message id is remembered.
pub(super) const CMID_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// The most senders told of one group `read` (the senders of the messages it covered).
const READ_NOTIFY_MAX: i64 = 256;

/// What a batch wrote to one conversation, for its row.
pub(super) struct ConvTouch {
    pub(super) last_seq: Seq,
    pub(super) last_msg_id: MsgId,
    pub(super) last_ts: i64,
    /// The pair (smaller id first) of a one-to-one conversation.
    pub(super) pair: Option<(UserId, UserId)>,
    pub(super) group: Option<GroupId>,
}

impl Writer {
    /// The last seq given out in `conv` (0 if none).
    pub(super) fn last_seq(&mut self, conv: ConvId) -> StoreResult<Seq> {
        if let Some(seq) = self.seqs.get(&conv) {
            return Ok(*seq);
        }
        let seq: Seq = self
            .conn
            .prepare_cached("SELECT last_seq FROM conversations WHERE id = ?1")
            .and_then(|mut s| s.query_row([conv], |r| r.get(0)).optional())
            .map_err(sql_error)?
            .unwrap_or(0);
        self.seqs.insert(conv, seq);
        Ok(seq)
    }

    /// The message `user` first sent with `cmid` in the last 24 hours, if any.
    pub(super) fn resend(
        &mut self,
        user: UserId,
        cmid: Option<&str>,
    ) -> StoreResult<Option<Arc<Msg>>> {
        let Some(cmid) = cmid else {
            return Ok(None);
        };
        let since = now_ms() - CMID_TTL_MS;
        self.conn
            .prepare_cached(&format!(
                "{MSG_SELECT} JOIN client_msg_ids c ON c.msg_id = m.id \
                 WHERE c.user_id = ?1 AND c.cmid = ?2 AND c.created_ms > ?3"
            ))
            .and_then(|mut s| {
                s.query_row(params![user, cmid, since], row_to_msg)
                    .optional()
            })
            .map(|msg| msg.map(Arc::new))
            .map_err(sql_error)
    }

    /// Writes the conversations this batch touched, and forgets them.
    pub(super) fn write_touched(&mut self) -> StoreResult<()> {
        for (conv, t) in self.touched.drain() {
            let (a, b) = t.pair.unzip();
            self.conn
                .prepare_cached(
                    "INSERT INTO conversations \
                     (id, user_a, user_b, group_id, last_seq, last_msg_id, last_ts) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, \
                     last_msg_id = excluded.last_msg_id, last_ts = excluded.last_ts",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        conv,
                        a,
                        b,
                        t.group,
                        t.last_seq,
                        t.last_msg_id,
                        t.last_ts
                    ])
                })
                .map_err(sql_error)?;
        }
        Ok(())
    }

    /// Moves delivered cursors (never back, never past the conversation's last seq), and
    /// forgets client message ids past their 24 hours.
    pub(super) fn write_acks(&mut self, acks: &AckMap) {
        for ((user, conv), seq) in acks {
            let result = self
                .conn
                .prepare_cached(
                    "INSERT INTO cursors (user_id, conv, delivered) \
                     SELECT ?1, ?2, min(?3, last_seq) FROM conversations WHERE id = ?2 \
                     ON CONFLICT (user_id, conv) DO UPDATE \
                     SET delivered = max(delivered, excluded.delivered)",
                )
                .and_then(|mut s| s.execute(params![user, conv, seq]));
            if let Err(e) = result {
                tracing::error!(error = %e, user, conv, "store: cannot move a delivered cursor");
            }
        }
        if !acks.is_empty() {
            let expired = self
                .conn
                .prepare_cached("DELETE FROM client_msg_ids WHERE created_ms < ?1")
                .and_then(|mut s| s.execute([now_ms() - CMID_TTL_MS]));
            if let Err(e) = expired {
                tracing::warn!(error = %e, "store: cannot forget old client message ids");
            }
        }
    }

    /// Moves `user`'s read cursor in `conv` up to `seq`; the delivered cursor follows.
    pub(super) fn mark_read(
        &mut self,
        user: UserId,
        conv: ConvId,
        seq: Seq,
    ) -> StoreResult<ReadMark> {
        let (group, _) = peers_of(&self.conn, user, conv)?;
        let last = self.last_seq(conv)?;
        let seq = seq.clamp(0, last);
        let old: Seq = self
            .conn
            .prepare_cached("SELECT read FROM cursors WHERE user_id = ?1 AND conv = ?2")
            .and_then(|mut s| s.query_row([user, conv], |r| r.get(0)).optional())
            .map_err(sql_error)?
            .unwrap_or(0);
        if seq <= old {
            return Ok(ReadMark {
                read: old,
                moved: false,
                notify: Vec::new(),
            });
        }
        self.conn
            .prepare_cached(
                "INSERT INTO cursors (user_id, conv, delivered, read) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (user_id, conv) DO UPDATE \
                 SET read = excluded.read, delivered = max(delivered, excluded.read)",
            )
            .and_then(|mut s| s.execute(params![user, conv, seq]))
            .map_err(sql_error)?;
        let notify = match (group, Conversation::of(user, conv)) {
            (None, Some(Conversation::With(peer))) => vec![peer],
            _ => {
                // A group: the senders of the messages this read covers.
                let mut stmt = self
                    .conn
                    .prepare_cached(
                        "SELECT DISTINCT from_user FROM messages \
                         WHERE conv = ?1 AND seq > ?2 AND seq <= ?3 AND from_user != ?4 LIMIT ?5",
                    )
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map(params![conv, old, seq, user, READ_NOTIFY_MAX], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<UserId>>>())
                    .map_err(sql_error)?;
                rows
            }
        };
        Ok(ReadMark {
            read: seq,
            moved: true,
            notify,
        })
    }
}

/// The members of `conv` other than `user` and its group, if `conv` is the user's.
pub(super) fn peers_of(
    conn: &Connection,
    user: UserId,
    conv: ConvId,
) -> StoreResult<(Option<GroupId>, Vec<UserId>)> {
    match Conversation::of(user, conv) {
        None => Err(StoreError::NotFound("no such conversation")),
        Some(Conversation::With(peer)) => {
            let exists: bool = conn
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)")
                .and_then(|mut s| s.query_row([peer], |r| r.get(0)))
                .map_err(sql_error)?;
            if !exists {
                return Err(StoreError::NotFound("no such conversation"));
            }
            Ok((None, vec![peer]))
        }
        Some(Conversation::Group(group)) => {
            let mut stmt = conn
                .prepare_cached("SELECT user_id FROM group_members WHERE group_id = ?1")
                .map_err(sql_error)?;
            let members = stmt
                .query_map([group], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<UserId>>>())
                .map_err(sql_error)?;
            if !members.contains(&user) {
                return Err(StoreError::NotFound("no such conversation"));
            }
            Ok((
                Some(group),
                members.into_iter().filter(|m| *m != user).collect(),
            ))
        }
    }
}

/// The user's conversations with something pending: (conv, the seq after which messages
/// are pending), the noted acks taken into account.
fn pending_convs(
    conn: &Connection,
    user: UserId,
    noted: &HashMap<ConvId, Seq>,
) -> rusqlite::Result<Vec<(ConvId, Seq)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, COALESCE(k.delivered, 0) AS d FROM conversations c \
           LEFT JOIN cursors k ON k.user_id = ?1 AND k.conv = c.id \
           WHERE c.user_a = ?1 AND c.last_seq > COALESCE(k.delivered, 0) \
         UNION ALL \
         SELECT c.id, COALESCE(k.delivered, 0) FROM conversations c \
           LEFT JOIN cursors k ON k.user_id = ?1 AND k.conv = c.id \
           WHERE c.user_b = ?1 AND c.last_seq > COALESCE(k.delivered, 0) \
         UNION ALL \
         SELECT c.id, max(gm.joined_seq, COALESCE(k.delivered, 0)) FROM group_members gm \
           JOIN conversations c ON c.id = -gm.group_id \
           LEFT JOIN cursors k ON k.user_id = ?1 AND k.conv = c.id \
           WHERE gm.user_id = ?1 AND c.last_seq > max(gm.joined_seq, COALESCE(k.delivered, 0))",
    )?;
    let rows = stmt.query_map([user], |r| {
        Ok((r.get::<_, ConvId>(0)?, r.get::<_, Seq>(1)?))
    })?;
    rows.map(|row| {
        row.map(|(conv, delivered)| {
            let noted = noted.get(&conv).copied().unwrap_or(0);
            (conv, delivered.max(noted))
        })
    })
    .collect()
}

/// Messages pending for `user`, sent after `since_ms`: per conversation, those above the
/// delivered cursor (or the position in `noted`, if higher) that are not the user's own,
/// in seq order; merged oldest first, at most `limit`.
pub(super) fn pending_of(
    conn: &Connection,
    user: UserId,
    noted: &HashMap<ConvId, Seq>,
    since_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Msg>> {
    let mut lists = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "{MSG_SELECT} WHERE m.conv = ?1 AND m.seq > ?2 AND m.from_user != ?3 \
         AND m.ts > ?4 ORDER BY m.seq LIMIT ?5"
    ))?;
    for (conv, delivered) in pending_convs(conn, user, noted)? {
        let rows = stmt.query_map(
            params![conv, delivered, user, since_ms, limit as i64],
            row_to_msg,
        )?;
        let list = rows.collect::<rusqlite::Result<Vec<Msg>>>()?;
        if !list.is_empty() {
            lists.push(list);
        }
    }
    Ok(crate::store::merge_by_conversation(lists, limit))
}

/// The messages of `conv` with a seq in `after + 1 .. before` (see [`Store::fill`]).
///
/// [`Store::fill`]: crate::store::Store::fill
pub(super) fn fill_of(
    conn: &Connection,
    user: UserId,
    conv: ConvId,
    after: Option<Seq>,
    noted: Seq,
    before: Seq,
    limit: usize,
) -> rusqlite::Result<StoreResult<Vec<Msg>>> {
    let joined = match Conversation::of(user, conv) {
        None => return Ok(Err(StoreError::NotFound("no such conversation"))),
        Some(Conversation::With(_)) => 0,
        Some(Conversation::Group(group)) => {
            match conn
                .prepare_cached(
                    "SELECT joined_seq FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                )?
                .query_row([group, user], |r| r.get::<_, Seq>(0))
                .optional()?
            {
                Some(seq) => seq,
                None => return Ok(Err(StoreError::NotFound("no such conversation"))),
            }
        }
    };
    let after = match after {
        Some(after) => after,
        None => {
            let delivered: Seq = conn
                .prepare_cached("SELECT delivered FROM cursors WHERE user_id = ?1 AND conv = ?2")?
                .query_row([user, conv], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            delivered.max(noted)
        }
    }
    .max(joined);
    let mut stmt = conn.prepare_cached(&format!(
        "{MSG_SELECT} WHERE m.conv = ?1 AND m.seq > ?2 AND m.seq < ?3 ORDER BY m.seq LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![conv, after, before, limit as i64], row_to_msg)?;
    Ok(Ok(rows.collect::<rusqlite::Result<Vec<Msg>>>()?))
}

/// A page of the user's conversations, most recent first: (last activity id, summary).
pub(super) fn conversations_of(
    conn: &Connection,
    user: UserId,
    before: MsgId,
    limit: usize,
) -> rusqlite::Result<Vec<(MsgId, ConvSummary)>> {
    struct Row {
        conv: ConvId,
        a: Option<UserId>,
        b: Option<UserId>,
        group: Option<GroupId>,
        last_seq: Seq,
        last_msg_id: MsgId,
        joined_seq: Seq,
        /// What the user may see starts after this seq.
        seen_after: Seq,
    }
    let rows: Vec<Row> = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, user_a, user_b, group_id, last_seq, last_msg_id, j, f FROM ( \
               SELECT c.*, 0 AS j, 0 AS f FROM conversations c \
                 WHERE c.user_a = ?1 AND c.last_msg_id < ?2 \
               UNION ALL \
               SELECT c.*, 0, 0 FROM conversations c WHERE c.user_b = ?1 AND c.last_msg_id < ?2 \
               UNION ALL \
               SELECT c.*, gm.joined_seq, \
                 CASE WHEN g.shared_history THEN 0 ELSE gm.joined_seq END FROM group_members gm \
                 JOIN conversations c ON c.id = -gm.group_id \
                 JOIN chat_groups g ON g.id = gm.group_id \
                 WHERE gm.user_id = ?1 AND c.last_msg_id < ?2) \
             ORDER BY last_msg_id DESC, id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![user, before, limit as i64], |r| {
            Ok(Row {
                conv: r.get(0)?,
                a: r.get(1)?,
                b: r.get(2)?,
                group: r.get(3)?,
                last_seq: r.get(4)?,
                last_msg_id: r.get(5)?,
                joined_seq: r.get(6)?,
                seen_after: r.get(7)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let read = cursor_read(conn, user, row.conv)?.max(row.joined_seq);
        let unread: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages \
                 WHERE conv = ?1 AND seq > ?2 AND from_user != ?3 LIMIT ?4)",
            )?
            .query_row(params![row.conv, read, user, UNREAD_CAP], |r| r.get(0))?;
        let last = if row.last_seq > row.seen_after {
            conn.prepare_cached(&format!("{MSG_SELECT} WHERE m.conv = ?1 AND m.seq = ?2"))?
                .query_row(params![row.conv, row.last_seq], row_to_msg)
                .optional()?
        } else {
            None
        };
        let (with, peer_read) = match row.group {
            Some(group) => {
                let name: String = conn
                    .prepare_cached("SELECT name FROM chat_groups WHERE id = ?1")?
                    .query_row([group], |r| r.get(0))
                    .optional()?
                    .unwrap_or_default();
                (ConvWith::Group { group, name }, None)
            }
            None => {
                let peer = if row.a == Some(user) { row.b } else { row.a }.unwrap_or(0);
                let name: String = conn
                    .prepare_cached("SELECT name FROM users WHERE id = ?1")?
                    .query_row([peer], |r| r.get(0))
                    .optional()?
                    .unwrap_or_default();
                let peer_read = cursor_read(conn, peer, row.conv)?;
                let peer = Friend {
                    id: peer,
                    name,
                    online: false,
                };
                (ConvWith::Direct { peer }, Some(peer_read))
            }
        };
        out.push((
            row.last_msg_id,
            ConvSummary {
                conv: row.conv,
                with,
                last,
                last_seq: row.last_seq,
                read,
                unread,
                peer_read,
            },
        ));
    }
    Ok(out)
}

fn cursor_read(conn: &Connection, user: UserId, conv: ConvId) -> rusqlite::Result<Seq> {
    conn.prepare_cached("SELECT read FROM cursors WHERE user_id = ?1 AND conv = ?2")?
        .query_row([user, conv], |r| r.get(0))
        .optional()
        .map(|read| read.unwrap_or(0))
}

/// What follows each of the user's positions, at most `limit` messages in all.
pub(super) fn sync_of(
    conn: &Connection,
    user: UserId,
    positions: &[ConvPos],
    limit: usize,
) -> rusqlite::Result<(Vec<Msg>, bool)> {
    let mut out = Vec::new();
    let mut more = false;
    let mut stmt = conn.prepare_cached(&format!(
        "{MSG_SELECT} WHERE m.conv = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3"
    ))?;
    for pos in positions {
        let from = match Conversation::of(user, pos.conv) {
            None => continue,
            Some(Conversation::With(_)) => pos.seq,
            Some(Conversation::Group(group)) => {
                let joined: Option<Seq> = conn
                    .prepare_cached(
                        "SELECT joined_seq FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                    )?
                    .query_row([group, user], |r| r.get(0))
                    .optional()?;
                match joined {
                    None => continue,
                    Some(joined) => pos.seq.max(joined),
                }
            }
        };
        let room = limit.saturating_sub(out.len());
        let rows = stmt.query_map(params![pos.conv, from, room as i64 + 1], row_to_msg)?;
        let mut got = rows.collect::<rusqlite::Result<Vec<Msg>>>()?;
        if got.len() > room {
            got.truncate(room);
            more = true;
        }
        out.extend(got);
    }
    Ok((out, more))
}
