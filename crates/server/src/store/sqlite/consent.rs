//! Consent on SQLite: friend requests, blocks, group invitations and group roles.
//!
//! None of these is on the message path, so each runs in a transaction of its own
//! beside the writer thread ([`SqliteStore::consent`]), where `BEGIN IMMEDIATE`
//! serialises it with every other write. Joining, removing and creating groups stay
//! with the writer: they change who receives a group's messages, which the commit log
//! must carry in order.

use chat_proto::types::{Invite, Role, User};
use chat_proto::{GroupId, UserId};
use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, sql_error, SqliteStore};
use crate::store::{Befriended, GroupRow, StoreError, StoreResult};

/// The answer to a request from or to someone who blocks, or is blocked by, the caller:
/// a plain refusal, the same whichever side blocks.
pub(crate) const REFUSED: StoreError = StoreError::Forbidden("refused");

impl SqliteStore {
    /// Runs `f` in an immediate transaction on a connection of its own.
    pub(super) async fn consent<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.on_side_connection(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let out = f(&tx)?;
            tx.commit().map_err(sql_error)?;
            Ok(out)
        })
        .await
    }
}

fn user_named(c: &Connection, id: UserId) -> StoreResult<User> {
    let name: Option<String> = c
        .prepare_cached("SELECT name FROM users WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    name.map(|name| User { id, name })
        .ok_or(StoreError::NotFound("no such user"))
}

fn one(c: &Connection, sql: &str, a: i64, b: i64) -> StoreResult<bool> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.exists(params![a, b]))
        .map_err(sql_error)
}

/// Whether either of the two blocks the other.
pub(super) fn blocked_either(c: &Connection, a: UserId, b: UserId) -> StoreResult<bool> {
    one(
        c,
        "SELECT 1 FROM blocks WHERE (user_id = ?1 AND blocked_id = ?2) \
         OR (user_id = ?2 AND blocked_id = ?1)",
        a,
        b,
    )
}

pub(super) fn add_friend(c: &Connection, user: UserId, friend: UserId) -> StoreResult<Befriended> {
    let other = user_named(c, friend)?;
    if blocked_either(c, user, friend)? {
        return Err(REFUSED);
    }
    if one(
        c,
        "SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2",
        user,
        friend,
    )? {
        return Err(StoreError::Conflict("already friends"));
    }
    let asked = c
        .execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![friend, user],
        )
        .map_err(sql_error)?;
    if asked > 0 {
        c.execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![user, friend],
        )
        .and_then(|_| {
            c.execute(
                "INSERT INTO friends (user_id, friend_id, created_ms) VALUES (?1, ?2, ?3), \
                 (?2, ?1, ?3)",
                params![user, friend, now_ms()],
            )
        })
        .map_err(sql_error)?;
        return Ok(Befriended::Friends(other));
    }
    let inserted = c
        .execute(
            "INSERT INTO friend_requests (from_user, to_user, created_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            params![user, friend, now_ms()],
        )
        .map_err(sql_error)?;
    if inserted == 0 {
        return Err(StoreError::Conflict("already asked; waiting for an answer"));
    }
    Ok(Befriended::Requested(other))
}

pub(super) fn remove_friend(c: &Connection, user: UserId, friend: UserId) -> StoreResult<()> {
    let removed = c
        .execute(
            "DELETE FROM friends WHERE (user_id = ?1 AND friend_id = ?2) \
             OR (user_id = ?2 AND friend_id = ?1)",
            params![user, friend],
        )
        .map_err(sql_error)?;
    let withdrawn = c
        .execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![user, friend],
        )
        .map_err(sql_error)?;
    if removed + withdrawn == 0 {
        return Err(StoreError::NotFound("not a friend"));
    }
    Ok(())
}

pub(super) fn decline_friend(c: &Connection, user: UserId, from: UserId) -> StoreResult<()> {
    let declined = c
        .execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![from, user],
        )
        .map_err(sql_error)?;
    if declined == 0 {
        return Err(StoreError::NotFound("no request from that user"));
    }
    Ok(())
}

fn users(c: &Connection, sql: &str, user: UserId) -> StoreResult<Vec<User>> {
    let mut stmt = c.prepare_cached(sql).map_err(sql_error)?;
    let rows = stmt
        .query_map([user], |r| {
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub(super) fn friend_requests(c: &Connection, user: UserId) -> StoreResult<(Vec<User>, Vec<User>)> {
    let incoming = users(
        c,
        "SELECT u.id, u.name FROM friend_requests r JOIN users u ON u.id = r.from_user \
         WHERE r.to_user = ?1 ORDER BY r.created_ms, u.id",
        user,
    )?;
    let outgoing = users(
        c,
        "SELECT u.id, u.name FROM friend_requests r JOIN users u ON u.id = r.to_user \
         WHERE r.from_user = ?1 ORDER BY r.created_ms, u.id",
        user,
    )?;
    Ok((incoming, outgoing))
}

pub(super) fn block(c: &Connection, user: UserId, other: UserId) -> StoreResult<bool> {
    user_named(c, other)?;
    let inserted = c
        .execute(
            "INSERT INTO blocks (user_id, blocked_id, created_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            params![user, other, now_ms()],
        )
        .map_err(sql_error)?;
    if inserted == 0 {
        return Err(StoreError::Conflict("already blocked"));
    }
    let were_friends = c
        .execute(
            "DELETE FROM friends WHERE (user_id = ?1 AND friend_id = ?2) \
             OR (user_id = ?2 AND friend_id = ?1)",
            params![user, other],
        )
        .and_then(|n| {
            c.execute(
                "DELETE FROM friend_requests WHERE (from_user = ?1 AND to_user = ?2) \
                 OR (from_user = ?2 AND to_user = ?1)",
                params![user, other],
            )
            .map(|_| n > 0)
        })
        .map_err(sql_error)?;
    Ok(were_friends)
}

pub(super) fn unblock(c: &Connection, user: UserId, other: UserId) -> StoreResult<()> {
    let removed = c
        .execute(
            "DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2",
            params![user, other],
        )
        .map_err(sql_error)?;
    if removed == 0 {
        return Err(StoreError::NotFound("not blocked"));
    }
    Ok(())
}

pub(super) fn blocked(c: &Connection, user: UserId) -> StoreResult<Vec<User>> {
    users(
        c,
        "SELECT u.id, u.name FROM blocks b JOIN users u ON u.id = b.blocked_id \
         WHERE b.user_id = ?1 ORDER BY u.id",
        user,
    )
}

pub(super) fn all_blocks(c: &Connection) -> rusqlite::Result<Vec<(UserId, UserId)>> {
    let mut stmt = c.prepare("SELECT user_id, blocked_id FROM blocks")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The group's row, with its settings.
pub(super) fn group_row(c: &Connection, group: GroupId) -> StoreResult<Option<GroupRow>> {
    c.prepare_cached(
        "SELECT id, name, description, open, shared_history FROM chat_groups WHERE id = ?1",
    )
    .and_then(|mut s| s.query_row([group], row_to_group).optional())
    .map_err(sql_error)
}

pub(super) fn row_to_group(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok(GroupRow {
        id: r.get(0)?,
        name: r.get(1)?,
        desc: r.get(2)?,
        settings: crate::store::GroupSettings {
            open: r.get(3)?,
            shared_history: r.get(4)?,
        },
    })
}

pub(super) fn role_in(c: &Connection, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
    let role: Option<String> = c
        .prepare_cached("SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2")
        .and_then(|mut s| s.query_row([group, user], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// Whether `user` may join `group` now; uses up an invitation if that is what lets it.
pub(super) fn may_join(c: &Connection, group: &GroupRow, user: UserId) -> StoreResult<bool> {
    let invited = c
        .execute(
            "DELETE FROM group_invites WHERE group_id = ?1 AND user_id = ?2",
            params![group.id, user],
        )
        .map_err(sql_error)?;
    if invited > 0 {
        return Ok(true);
    }
    let banned = one(
        c,
        "SELECT 1 FROM group_bans WHERE group_id = ?1 AND user_id = ?2",
        group.id,
        user,
    )?;
    Ok(group.settings.open && !banned)
}

pub(super) fn group_invite(
    c: &Connection,
    group: GroupId,
    by: UserId,
    user: UserId,
) -> StoreResult<GroupRow> {
    let row = group_row(c, group)?.ok_or(StoreError::NotFound("no such group"))?;
    match role_in(c, group, by)? {
        Some(Role::Creator | Role::Admin) => {}
        Some(Role::Member) => {
            return Err(StoreError::Forbidden(
                "only the group's creator or its admins may invite",
            ))
        }
        None => return Err(StoreError::NotFound("no such group")),
    }
    user_named(c, user)?;
    if role_in(c, group, user)?.is_some() {
        return Err(StoreError::Conflict("already a member"));
    }
    if blocked_either(c, by, user)? {
        return Err(REFUSED);
    }
    c.execute(
        "DELETE FROM group_bans WHERE group_id = ?1 AND user_id = ?2",
        params![group, user],
    )
    .and_then(|_| {
        c.execute(
            "INSERT INTO group_invites (group_id, user_id, by_user, created_ms) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (group_id, user_id) \
             DO UPDATE SET by_user = excluded.by_user",
            params![group, user, by, now_ms()],
        )
    })
    .map_err(sql_error)?;
    Ok(row)
}

pub(super) fn decline_invite(c: &Connection, group: GroupId, user: UserId) -> StoreResult<()> {
    let declined = c
        .execute(
            "DELETE FROM group_invites WHERE group_id = ?1 AND user_id = ?2",
            params![group, user],
        )
        .map_err(sql_error)?;
    if declined == 0 {
        return Err(StoreError::NotFound("no invitation into that group"));
    }
    Ok(())
}

pub(super) fn invites(c: &Connection, user: UserId) -> StoreResult<Vec<Invite>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT g.id, g.name, g.description, u.id, u.name FROM group_invites i \
             JOIN chat_groups g ON g.id = i.group_id JOIN users u ON u.id = i.by_user \
             WHERE i.user_id = ?1 ORDER BY i.created_ms, g.id",
        )
        .map_err(sql_error)?;
    let rows = stmt
        .query_map([user], |r| {
            Ok(Invite {
                group: r.get(0)?,
                name: r.get(1)?,
                desc: r.get(2)?,
                by: User {
                    id: r.get(3)?,
                    name: r.get(4)?,
                },
            })
        })
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

pub(super) fn set_group_role(
    c: &Connection,
    group: GroupId,
    by: UserId,
    user: UserId,
    role: Role,
) -> StoreResult<()> {
    if role == Role::Creator {
        return Err(StoreError::Forbidden("a group has one creator"));
    }
    group_row(c, group)?.ok_or(StoreError::NotFound("no such group"))?;
    if role_in(c, group, by)? != Some(Role::Creator) {
        return Err(StoreError::Forbidden(
            "only the group's creator may change roles",
        ));
    }
    match role_in(c, group, user)? {
        Some(Role::Admin | Role::Member) => {}
        Some(Role::Creator) => return Err(StoreError::Forbidden("a group has one creator")),
        None => {
            return Err(StoreError::NotFound(
                "that user is not a member of the group",
            ))
        }
    }
    c.execute(
        "UPDATE group_members SET role = ?3 WHERE group_id = ?1 AND user_id = ?2",
        params![group, user, role.as_str()],
    )
    .map_err(sql_error)?;
    Ok(())
}
