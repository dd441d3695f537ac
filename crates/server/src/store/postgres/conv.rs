//! Conversations on PostgreSQL: seqs, cursors, `cmid`s, and the reads built on them.
//!
//! A writer takes a conversation's seq under that conversation's row lock: at the start
//! of a batch it locks (creating if need be) the rows of every conversation the batch's
//! messages go to, in id order, with one statement; a conversation met later (a group
//! created in the same batch) is locked at its first message. Only writers to the same
//! conversation wait on each other for it. The rows get their new last seq just before
//! COMMIT.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chat_proto::types::{ConvPos, ConvSummary, ConvWith, Friend, Msg, UNREAD_CAP};
use chat_proto::{ConvId, GroupId, MsgId, Seq, UserId};
use deadpool_postgres::ClientWrapper;

use super::{exists, now_ms, opt_row, row_to_msg, rows, Batch, Writer, MSG_SELECT};
use crate::store::writes::{AckMap, Write};
use crate::store::{direct_conv, group_conv, Conversation, ReadMark, StoreError, StoreResult};

/// How long a client message id is remembered.
const CMID_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// The most senders told of one group `read`.
const READ_NOTIFY_MAX: i64 = 256;

impl Writer {
    /// Locks the rows of the conversations this batch's messages go to (one-to-one rows
    /// are created here, for recipients that exist), and notes their last seqs.
    pub(super) async fn lock_conversations(
        &mut self,
        ops: &VecDeque<Write>,
        done: &mut Batch,
    ) -> StoreResult<()> {
        let mut convs = BTreeSet::new();
        for op in ops {
            match op {
                Write::Send { from, to, .. } if *to != from.id && self.user_exists(*to).await? => {
                    convs.insert(direct_conv(from.id, *to));
                }
                Write::GroupSend { group, .. } => {
                    convs.insert(group_conv(*group));
                }
                _ => {}
            }
        }
        if convs.is_empty() {
            return Ok(());
        }
        let (mut direct, mut a, mut b, mut groups) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for conv in convs {
            if conv > 0 {
                direct.push(conv);
                a.push(conv >> 32);
                b.push(conv & 0xFFFF_FFFF);
            } else {
                groups.push(conv);
            }
        }
        // One round trip. In id order, so that two writers lock rows in the same order;
        // the no-op update takes the lock of a row that exists.
        let locked = self
            .query(
                "WITH d AS (INSERT INTO conversations \
                   (id, user_a, user_b, last_seq, last_msg_id, last_ts) \
                   SELECT id, a, b, 0, 0, 0 \
                   FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(id, a, b) \
                   ORDER BY id \
                   ON CONFLICT (id) DO UPDATE SET last_seq = conversations.last_seq \
                   RETURNING id, last_seq), \
                 g AS (SELECT id, last_seq FROM conversations WHERE id = ANY($4) \
                   ORDER BY id FOR UPDATE) \
                 SELECT id, last_seq FROM d UNION ALL SELECT id, last_seq FROM g",
                &[&direct, &a, &b, &groups],
            )
            .await?;
        for row in locked {
            done.seqs.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(())
    }

    /// The last seq of `conv` so far in this batch, locking its row if not yet locked.
    pub(super) async fn conv_seq(&mut self, done: &mut Batch, conv: ConvId) -> StoreResult<Seq> {
        if let Some(seq) = done.seqs.get(&conv) {
            return Ok(*seq);
        }
        if conv > 0 {
            self.execute(
                "INSERT INTO conversations (id, user_a, user_b, last_seq, last_msg_id, last_ts) \
                 VALUES ($1, $2, $3, 0, 0, 0) ON CONFLICT (id) DO NOTHING",
                &[&conv, &(conv >> 32), &(conv & 0xFFFF_FFFF)],
            )
            .await?;
        }
        let seq: Seq = self
            .query_opt(
                "SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE",
                &[&conv],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .ok_or(StoreError::NotFound("no such conversation"))?;
        done.seqs.insert(conv, seq);
        Ok(seq)
    }

    /// Writes the batch's `cmid`s.
    pub(super) async fn write_cmids(
        &mut self,
        cmids: &HashMap<(UserId, String), Arc<Msg>>,
    ) -> StoreResult<()> {
        if !cmids.is_empty() {
            let (mut users, mut texts, mut msgs, mut ts): (
                Vec<UserId>,
                Vec<&str>,
                Vec<MsgId>,
                Vec<i64>,
            ) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((user, cmid), msg) in cmids {
                users.push(*user);
                texts.push(cmid.as_str());
                msgs.push(msg.id);
                ts.push(msg.ts);
            }
            self.execute(
                "INSERT INTO client_msg_ids (user_id, cmid, msg_id, created_ms) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (user_id, cmid) DO UPDATE \
                 SET msg_id = excluded.msg_id, created_ms = excluded.created_ms",
                &[&users, &texts, &msgs, &ts],
            )
            .await?;
        }
        Ok(())
    }

    /// Moves delivered cursors (never back, never past the last seq), in key order, and
    /// forgets client message ids past their 24 hours.
    pub(super) async fn write_acks(&mut self, acks: &AckMap) -> StoreResult<()> {
        let (mut users, mut convs, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
        for ((user, conv), seq) in acks {
            users.push(*user);
            convs.push(*conv);
            seqs.push(*seq);
        }
        self.simple("SAVEPOINT acks").await?;
        let written = self
            .execute(
                "INSERT INTO cursors (user_id, conv, delivered) \
                 SELECT t.u, t.c, LEAST(t.s, c.last_seq) \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(u, c, s) \
                 JOIN conversations c ON c.id = t.c ORDER BY t.u, t.c \
                 ON CONFLICT (user_id, conv) DO UPDATE \
                 SET delivered = GREATEST(cursors.delivered, excluded.delivered)",
                &[&users, &convs, &seqs],
            )
            .await;
        let expired = match written {
            Ok(_) => {
                self.execute(
                    "DELETE FROM client_msg_ids WHERE created_ms < $1",
                    &[&(now_ms() - CMID_TTL_MS)],
                )
                .await
            }
            Err(e) => Err(e),
        };
        match expired {
            Ok(_) => self.simple("RELEASE SAVEPOINT acks").await,
            Err(e) => {
                tracing::error!(error = %e, n = users.len(), "store: cannot move delivered cursors");
                self.simple("ROLLBACK TO SAVEPOINT acks; RELEASE SAVEPOINT acks")
                    .await
            }
        }
    }

    /// The message `user` first sent with `cmid` in the last 24 hours (in this batch or
    /// an earlier one), if any.
    pub(super) async fn resend(
        &mut self,
        batch_cmids: &HashMap<(UserId, String), Arc<Msg>>,
        user: UserId,
        cmid: &Option<String>,
    ) -> StoreResult<Option<Arc<Msg>>> {
        let Some(cmid) = cmid else {
            return Ok(None);
        };
        if let Some(msg) = batch_cmids.get(&(user, cmid.clone())) {
            return Ok(Some(msg.clone()));
        }
        let row = self
            .query_opt(
                "SELECT m.id, m.ts, m.from_user, u.name, m.text, m.to_user, m.group_id, \
                 m.conv, m.seq FROM client_msg_ids k JOIN messages m ON m.id = k.msg_id \
                 JOIN users u ON u.id = m.from_user \
                 WHERE k.user_id = $1 AND k.cmid = $2 AND k.created_ms > $3",
                &[&user, &cmid.as_str(), &(now_ms() - CMID_TTL_MS)],
            )
            .await?;
        row.map(|row| row_to_msg(&row).map(Arc::new)).transpose()
    }

    /// Moves `user`'s read cursor in `conv` up to `seq`; the delivered cursor follows.
    pub(super) async fn mark_read(
        &mut self,
        done: &mut Batch,
        user: UserId,
        conv: ConvId,
        seq: Seq,
    ) -> StoreResult<ReadMark> {
        let peer = match Conversation::of(user, conv) {
            None => return Err(StoreError::NotFound("no such conversation")),
            Some(Conversation::With(peer)) => Some(peer),
            Some(Conversation::Group(group)) => {
                let member = self
                    .query_opt(
                        "SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2",
                        &[&group, &user],
                    )
                    .await?
                    .is_some();
                if !member {
                    return Err(StoreError::NotFound("no such conversation"));
                }
                None
            }
        };
        let last = match done.seqs.get(&conv) {
            Some(seq) => *seq,
            None => self
                .query_opt("SELECT last_seq FROM conversations WHERE id = $1", &[&conv])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0),
        };
        let seq = seq.clamp(0, last);
        let old: Seq = self
            .query_opt(
                "SELECT read FROM cursors WHERE user_id = $1 AND conv = $2",
                &[&user, &conv],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        if seq <= old {
            return Ok(ReadMark {
                read: old,
                moved: false,
                notify: Vec::new(),
            });
        }
        self.execute(
            "INSERT INTO cursors (user_id, conv, delivered, read) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (user_id, conv) DO UPDATE \
             SET read = excluded.read, delivered = GREATEST(cursors.delivered, excluded.read)",
            &[&user, &conv, &seq],
        )
        .await?;
        let notify = match peer {
            Some(peer) => vec![peer],
            None => self
                .query(
                    "SELECT DISTINCT from_user FROM messages \
                     WHERE conv = $1 AND seq > $2 AND seq <= $3 AND from_user <> $4 LIMIT $5",
                    &[&conv, &old, &seq, &user, &READ_NOTIFY_MAX],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?,
        };
        Ok(ReadMark {
            read: seq,
            moved: true,
            notify,
        })
    }
}

/// The members of `conv` other than `user` and its group, if `conv` is the user's.
pub(super) async fn peers_of(
    c: &ClientWrapper,
    user: UserId,
    conv: ConvId,
) -> StoreResult<(Option<GroupId>, Vec<UserId>)> {
    match Conversation::of(user, conv) {
        None => Err(StoreError::NotFound("no such conversation")),
        Some(Conversation::With(peer)) => {
            if !exists(c, "SELECT 1 FROM users WHERE id = $1", &[&peer]).await? {
                return Err(StoreError::NotFound("no such conversation"));
            }
            Ok((None, vec![peer]))
        }
        Some(Conversation::Group(group)) => {
            let members: Vec<UserId> = rows(
                c,
                "SELECT user_id FROM group_members WHERE group_id = $1",
                &[&group],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
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

/// Messages pending for `user` with an id above `after`, sent after `since_ms`, oldest
/// first: per conversation, those above the delivered cursor that are not the user's own.
pub(super) async fn pending_of(
    c: &ClientWrapper,
    user: UserId,
    noted: &HashMap<ConvId, Seq>,
    since_ms: i64,
    limit: usize,
) -> StoreResult<Vec<Msg>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let convs = rows(
        c,
        "SELECT c.id, COALESCE(k.delivered, 0) FROM conversations c \
           LEFT JOIN cursors k ON k.user_id = $1 AND k.conv = c.id \
           WHERE c.user_a = $1 AND c.last_seq > COALESCE(k.delivered, 0) \
         UNION ALL \
         SELECT c.id, COALESCE(k.delivered, 0) FROM conversations c \
           LEFT JOIN cursors k ON k.user_id = $1 AND k.conv = c.id \
           WHERE c.user_b = $1 AND c.last_seq > COALESCE(k.delivered, 0) \
         UNION ALL \
         SELECT c.id, GREATEST(gm.joined_seq, COALESCE(k.delivered, 0)) FROM group_members gm \
           JOIN conversations c ON c.id = -gm.group_id \
           LEFT JOIN cursors k ON k.user_id = $1 AND k.conv = c.id \
           WHERE gm.user_id = $1 AND c.last_seq > GREATEST(gm.joined_seq, COALESCE(k.delivered, 0))",
        &[&user],
    )
    .await?;
    let mut ids = Vec::with_capacity(convs.len());
    let mut froms = Vec::with_capacity(convs.len());
    for row in &convs {
        let conv: ConvId = row.try_get(0)?;
        let delivered: Seq = row.try_get(1)?;
        ids.push(conv);
        froms.push(delivered.max(noted.get(&conv).copied().unwrap_or(0)));
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = rows(
        c,
        &format!(
            "SELECT p.* FROM unnest($1::bigint[], $2::bigint[]) AS t(conv, after_seq) \
             CROSS JOIN LATERAL ({MSG_SELECT} WHERE m.conv = t.conv AND m.seq > t.after_seq \
               AND m.from_user <> $3 AND m.ts > $4 ORDER BY m.seq LIMIT $5) p \
             ORDER BY p.conv, p.seq"
        ),
        &[&ids, &froms, &user, &since_ms, &limit],
    )
    .await?;
    // Per conversation in seq order, then merged oldest first: a page holds a prefix of
    // each conversation's pending messages.
    let mut lists: Vec<Vec<Msg>> = Vec::new();
    for row in &rows {
        let msg = row_to_msg(row)?;
        match lists.last_mut() {
            Some(list) if list.last().is_some_and(|m| m.conv == msg.conv) => list.push(msg),
            _ => lists.push(vec![msg]),
        }
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(crate::store::merge_by_conversation(lists, limit))
}

/// A page of the user's conversations, most recent first: (last activity id, summary).
pub(super) async fn conversations_of(
    c: &ClientWrapper,
    user: UserId,
    before: MsgId,
    limit: usize,
) -> StoreResult<Vec<(MsgId, ConvSummary)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let page = rows(
        c,
        "SELECT id, user_a, user_b, group_id, last_seq, last_msg_id, j, f FROM ( \
           SELECT c.*, 0::bigint AS j, 0::bigint AS f FROM conversations c \
             WHERE c.user_a = $1 AND c.last_msg_id < $2 AND c.last_seq > 0 \
           UNION ALL \
           SELECT c.*, 0, 0 FROM conversations c \
             WHERE c.user_b = $1 AND c.last_msg_id < $2 AND c.last_seq > 0 \
           UNION ALL \
           SELECT c.*, gm.joined_seq, \
             CASE WHEN g.shared_history THEN 0 ELSE gm.joined_seq END FROM group_members gm \
             JOIN conversations c ON c.id = -gm.group_id \
             JOIN chat_groups g ON g.id = gm.group_id \
             WHERE gm.user_id = $1 AND c.last_msg_id < $2) x \
         ORDER BY last_msg_id DESC, id LIMIT $3",
        &[&user, &before, &limit],
    )
    .await?;
    let mut out = Vec::with_capacity(page.len());
    for row in page {
        let conv: ConvId = row.try_get(0)?;
        let a: Option<UserId> = row.try_get(1)?;
        let b: Option<UserId> = row.try_get(2)?;
        let group: Option<GroupId> = row.try_get(3)?;
        let last_seq: Seq = row.try_get(4)?;
        let last_msg_id: MsgId = row.try_get(5)?;
        let joined_seq: Seq = row.try_get(6)?;
        let seen_after: Seq = row.try_get(7)?;
        let read = cursor_read(c, user, conv).await?.max(joined_seq);
        let unread: i64 = opt_row(
            c,
            "SELECT COUNT(*) FROM (SELECT 1 FROM messages \
             WHERE conv = $1 AND seq > $2 AND from_user <> $3 LIMIT $4) x",
            &[&conv, &read, &user, &UNREAD_CAP],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
        let last = if last_seq > seen_after {
            opt_row(
                c,
                &format!("{MSG_SELECT} WHERE m.conv = $1 AND m.seq = $2"),
                &[&conv, &last_seq],
            )
            .await?
            .map(|r| row_to_msg(&r))
            .transpose()?
        } else {
            None
        };
        let (with, peer_read) = match group {
            Some(group) => {
                let name: String =
                    opt_row(c, "SELECT name FROM chat_groups WHERE id = $1", &[&group])
                        .await?
                        .map(|r| r.try_get(0))
                        .transpose()?
                        .unwrap_or_default();
                (ConvWith::Group { group, name }, None)
            }
            None => {
                let peer = if a == Some(user) { b } else { a }.unwrap_or(0);
                let name: String = opt_row(c, "SELECT name FROM users WHERE id = $1", &[&peer])
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or_default();
                let peer_read = cursor_read(c, peer, conv).await?;
                let peer = Friend {
                    id: peer,
                    name,
                    online: false,
                };
                (ConvWith::Direct { peer }, Some(peer_read))
            }
        };
        out.push((
            last_msg_id,
            ConvSummary {
                conv,
                with,
                last,
                last_seq,
                read,
                unread,
                peer_read,
            },
        ));
    }
    Ok(out)
}

async fn cursor_read(c: &ClientWrapper, user: UserId, conv: ConvId) -> StoreResult<Seq> {
    Ok(opt_row(
        c,
        "SELECT read FROM cursors WHERE user_id = $1 AND conv = $2",
        &[&user, &conv],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(0))
}

/// What follows each of the user's positions, at most `limit` messages in all.
pub(super) async fn sync_of(
    c: &ClientWrapper,
    user: UserId,
    positions: &[ConvPos],
    limit: usize,
) -> StoreResult<(Vec<Msg>, bool)> {
    let mut out = Vec::new();
    let mut more = false;
    for pos in positions {
        let from = match Conversation::of(user, pos.conv) {
            None => continue,
            Some(Conversation::With(_)) => pos.seq,
            Some(Conversation::Group(group)) => {
                let joined = opt_row(
                    c,
                    "SELECT joined_seq FROM group_members WHERE group_id = $1 AND user_id = $2",
                    &[&group, &user],
                )
                .await?;
                match joined {
                    None => continue,
                    Some(row) => pos.seq.max(row.try_get(0)?),
                }
            }
        };
        let room = limit.saturating_sub(out.len());
        let take = i64::try_from(room).unwrap_or(i64::MAX).saturating_add(1);
        let got = rows(
            c,
            &format!("{MSG_SELECT} WHERE m.conv = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3"),
            &[&pos.conv, &from, &take],
        )
        .await?;
        let mut got = got
            .iter()
            .map(row_to_msg)
            .collect::<StoreResult<Vec<_>>>()?;
        if got.len() > room {
            got.truncate(room);
            more = true;
        }
        out.extend(got);
    }
    Ok((out, more))
}

/// The messages of `conv` with a seq in `after + 1 .. before` (see [`Store::fill`]).
///
/// [`Store::fill`]: crate::store::Store::fill
pub(super) async fn fill_of(
    c: &ClientWrapper,
    user: UserId,
    conv: ConvId,
    after: Option<Seq>,
    noted: Seq,
    before: Seq,
    limit: usize,
) -> StoreResult<Vec<Msg>> {
    let joined: Seq = match Conversation::of(user, conv) {
        None => return Err(StoreError::NotFound("no such conversation")),
        Some(Conversation::With(_)) => 0,
        Some(Conversation::Group(group)) => opt_row(
            c,
            "SELECT joined_seq FROM group_members WHERE group_id = $1 AND user_id = $2",
            &[&group, &user],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .ok_or(StoreError::NotFound("no such conversation"))?,
    };
    let after = match after {
        Some(after) => after,
        None => cursor_delivered(c, user, conv).await?.max(noted),
    }
    .max(joined);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = rows(
        c,
        &format!(
            "{MSG_SELECT} WHERE m.conv = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq LIMIT $4"
        ),
        &[&conv, &after, &before, &limit],
    )
    .await?;
    rows.iter().map(row_to_msg).collect()
}

async fn cursor_delivered(c: &ClientWrapper, user: UserId, conv: ConvId) -> StoreResult<Seq> {
    Ok(opt_row(
        c,
        "SELECT delivered FROM cursors WHERE user_id = $1 AND conv = $2",
        &[&user, &conv],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(0))
}
