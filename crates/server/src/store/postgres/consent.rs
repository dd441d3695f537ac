//! Consent on PostgreSQL: friend requests, blocks, group invitations and group roles.
//!
//! None of these is on the message path: each runs in a transaction of its own on a
//! pooled connection ([`PgStore::consent`]). Two users answering each other at once
//! (both `add_friend`) are serialised by locking both user rows, in id order. Joining,
//! removing and creating groups stay with the writer, whose commits carry them in order.

use chat_proto::types::{Invite, Role, User};
use chat_proto::{GroupId, UserId};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Transaction};

use super::{now_ms, row_to_group};
use crate::store::{Befriended, GroupRow, StoreError, StoreResult};

/// The answer to a request between two users of whom one blocks the other: a plain
/// refusal, the same whichever side blocks.
const REFUSED: StoreError = StoreError::Forbidden("refused");

/// Runs `$body` (a future using the transaction `$tx`) in a transaction of its own on a
/// pooled connection of `$store`, bounded in time like a read.
macro_rules! in_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        timed(READ_TIMEOUT, "a write to PostgreSQL", async {
            let mut client = $store.reads.get().await.map_err(pool_error)?;
            let $tx = client.transaction().await?;
            let out = $body.await?;
            $tx.commit().await?;
            Ok(out)
        })
        .await
    };
}
pub(super) use in_tx;

async fn opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    Ok(tx.query_opt(sql, params).await?)
}

async fn exec(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    Ok(tx.execute(sql, params).await?)
}

async fn user_named(tx: &Transaction<'_>, id: UserId) -> StoreResult<User> {
    let row = opt(tx, "SELECT name FROM users WHERE id = $1", &[&id]).await?;
    match row {
        Some(row) => Ok(User {
            id,
            name: row.try_get(0)?,
        }),
        None => Err(StoreError::NotFound("no such user")),
    }
}

/// Locks the two users' rows in id order, so that two requests between them run one
/// after the other.
async fn lock_pair(tx: &Transaction<'_>, a: UserId, b: UserId) -> StoreResult<()> {
    tx.query(
        "SELECT id FROM users WHERE id = $1 OR id = $2 ORDER BY id FOR UPDATE",
        &[&a, &b],
    )
    .await?;
    Ok(())
}

async fn blocked_either(tx: &Transaction<'_>, a: UserId, b: UserId) -> StoreResult<bool> {
    Ok(opt(
        tx,
        "SELECT 1 FROM blocks WHERE (user_id = $1 AND blocked_id = $2) \
         OR (user_id = $2 AND blocked_id = $1)",
        &[&a, &b],
    )
    .await?
    .is_some())
}

pub(super) async fn add_friend(
    tx: &Transaction<'_>,
    user: UserId,
    friend: UserId,
) -> StoreResult<Befriended> {
    let other = user_named(tx, friend).await?;
    lock_pair(tx, user, friend).await?;
    if blocked_either(tx, user, friend).await? {
        return Err(REFUSED);
    }
    let friends = "SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2";
    if opt(tx, friends, &[&user, &friend]).await?.is_some() {
        return Err(StoreError::Conflict("already friends"));
    }
    let request = "DELETE FROM friend_requests WHERE from_user = $1 AND to_user = $2";
    if exec(tx, request, &[&friend, &user]).await? > 0 {
        exec(tx, request, &[&user, &friend]).await?;
        exec(
            tx,
            "INSERT INTO friends (user_id, friend_id, created_ms) VALUES ($1, $2, $3), \
             ($2, $1, $3)",
            &[&user, &friend, &now_ms()],
        )
        .await?;
        return Ok(Befriended::Friends(other));
    }
    let inserted = exec(
        tx,
        "INSERT INTO friend_requests (from_user, to_user, created_ms) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        &[&user, &friend, &now_ms()],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict("already asked; waiting for an answer"));
    }
    Ok(Befriended::Requested(other))
}

pub(super) async fn remove_friend(
    tx: &Transaction<'_>,
    user: UserId,
    friend: UserId,
) -> StoreResult<()> {
    let removed = exec(
        tx,
        "DELETE FROM friends WHERE (user_id = $1 AND friend_id = $2) \
         OR (user_id = $2 AND friend_id = $1)",
        &[&user, &friend],
    )
    .await?;
    let withdrawn = exec(
        tx,
        "DELETE FROM friend_requests WHERE from_user = $1 AND to_user = $2",
        &[&user, &friend],
    )
    .await?;
    if removed + withdrawn == 0 {
        return Err(StoreError::NotFound("not a friend"));
    }
    Ok(())
}

pub(super) async fn decline_friend(
    tx: &Transaction<'_>,
    user: UserId,
    from: UserId,
) -> StoreResult<()> {
    let declined = exec(
        tx,
        "DELETE FROM friend_requests WHERE from_user = $1 AND to_user = $2",
        &[&from, &user],
    )
    .await?;
    if declined == 0 {
        return Err(StoreError::NotFound("no request from that user"));
    }
    Ok(())
}

async fn users(tx: &Transaction<'_>, sql: &str, user: UserId) -> StoreResult<Vec<User>> {
    tx.query(sql, &[&user])
        .await?
        .iter()
        .map(|r| {
            Ok(User {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
            })
        })
        .collect()
}

pub(super) async fn friend_requests(
    tx: &Transaction<'_>,
    user: UserId,
) -> StoreResult<(Vec<User>, Vec<User>)> {
    let incoming = users(
        tx,
        "SELECT u.id, u.name FROM friend_requests r JOIN users u ON u.id = r.from_user \
         WHERE r.to_user = $1 ORDER BY r.created_ms, u.id",
        user,
    )
    .await?;
    let outgoing = users(
        tx,
        "SELECT u.id, u.name FROM friend_requests r JOIN users u ON u.id = r.to_user \
         WHERE r.from_user = $1 ORDER BY r.created_ms, u.id",
        user,
    )
    .await?;
    Ok((incoming, outgoing))
}

pub(super) async fn block(tx: &Transaction<'_>, user: UserId, other: UserId) -> StoreResult<bool> {
    user_named(tx, other).await?;
    lock_pair(tx, user, other).await?;
    let inserted = exec(
        tx,
        "INSERT INTO blocks (user_id, blocked_id, created_ms) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        &[&user, &other, &now_ms()],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict("already blocked"));
    }
    let were_friends = exec(
        tx,
        "DELETE FROM friends WHERE (user_id = $1 AND friend_id = $2) \
         OR (user_id = $2 AND friend_id = $1)",
        &[&user, &other],
    )
    .await?
        > 0;
    exec(
        tx,
        "DELETE FROM friend_requests WHERE (from_user = $1 AND to_user = $2) \
         OR (from_user = $2 AND to_user = $1)",
        &[&user, &other],
    )
    .await?;
    Ok(were_friends)
}

pub(super) async fn unblock(tx: &Transaction<'_>, user: UserId, other: UserId) -> StoreResult<()> {
    let removed = exec(
        tx,
        "DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2",
        &[&user, &other],
    )
    .await?;
    if removed == 0 {
        return Err(StoreError::NotFound("not blocked"));
    }
    Ok(())
}

pub(super) async fn blocked(tx: &Transaction<'_>, user: UserId) -> StoreResult<Vec<User>> {
    users(
        tx,
        "SELECT u.id, u.name FROM blocks b JOIN users u ON u.id = b.blocked_id \
         WHERE b.user_id = $1 ORDER BY u.id",
        user,
    )
    .await
}

pub(super) async fn all_blocks(tx: &Transaction<'_>) -> StoreResult<Vec<(UserId, UserId)>> {
    tx.query("SELECT user_id, blocked_id FROM blocks", &[])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

async fn role_in(tx: &Transaction<'_>, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
    let row = opt(
        tx,
        "SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2",
        &[&group, &user],
    )
    .await?;
    match row {
        Some(row) => Ok(Role::parse(&row.try_get::<_, String>(0)?)),
        None => Ok(None),
    }
}

async fn group_row(tx: &Transaction<'_>, group: GroupId) -> StoreResult<GroupRow> {
    let row = opt(
        tx,
        "SELECT id, name, description, open, shared_history FROM chat_groups WHERE id = $1 \
         FOR UPDATE",
        &[&group],
    )
    .await?
    .ok_or(StoreError::NotFound("no such group"))?;
    Ok(row_to_group(&row)?)
}

pub(super) async fn group_invite(
    tx: &Transaction<'_>,
    group: GroupId,
    by: UserId,
    user: UserId,
) -> StoreResult<GroupRow> {
    let row = group_row(tx, group).await?;
    match role_in(tx, group, by).await? {
        Some(Role::Creator | Role::Admin) => {}
        Some(Role::Member) => {
            return Err(StoreError::Forbidden(
                "only the group's creator or its admins may invite",
            ))
        }
        None => return Err(StoreError::NotFound("no such group")),
    }
    user_named(tx, user).await?;
    if role_in(tx, group, user).await?.is_some() {
        return Err(StoreError::Conflict("already a member"));
    }
    if blocked_either(tx, by, user).await? {
        return Err(REFUSED);
    }
    exec(
        tx,
        "DELETE FROM group_bans WHERE group_id = $1 AND user_id = $2",
        &[&group, &user],
    )
    .await?;
    exec(
        tx,
        "INSERT INTO group_invites (group_id, user_id, by_user, created_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, user_id) \
         DO UPDATE SET by_user = excluded.by_user",
        &[&group, &user, &by, &now_ms()],
    )
    .await?;
    Ok(row)
}

pub(super) async fn decline_invite(
    tx: &Transaction<'_>,
    group: GroupId,
    user: UserId,
) -> StoreResult<()> {
    let declined = exec(
        tx,
        "DELETE FROM group_invites WHERE group_id = $1 AND user_id = $2",
        &[&group, &user],
    )
    .await?;
    if declined == 0 {
        return Err(StoreError::NotFound("no invitation into that group"));
    }
    Ok(())
}

pub(super) async fn invites(tx: &Transaction<'_>, user: UserId) -> StoreResult<Vec<Invite>> {
    tx.query(
        "SELECT g.id, g.name, g.description, u.id, u.name FROM group_invites i \
         JOIN chat_groups g ON g.id = i.group_id JOIN users u ON u.id = i.by_user \
         WHERE i.user_id = $1 ORDER BY i.created_ms, g.id",
        &[&user],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Invite {
            group: r.try_get(0)?,
            name: r.try_get(1)?,
            desc: r.try_get(2)?,
            by: User {
                id: r.try_get(3)?,
                name: r.try_get(4)?,
            },
        })
    })
    .collect()
}

pub(super) async fn set_group_role(
    tx: &Transaction<'_>,
    group: GroupId,
    by: UserId,
    user: UserId,
    role: Role,
) -> StoreResult<()> {
    if role == Role::Creator {
        return Err(StoreError::Forbidden("a group has one creator"));
    }
    group_row(tx, group).await?;
    if role_in(tx, group, by).await? != Some(Role::Creator) {
        return Err(StoreError::Forbidden(
            "only the group's creator may change roles",
        ));
    }
    match role_in(tx, group, user).await? {
        Some(Role::Admin | Role::Member) => {}
        Some(Role::Creator) => return Err(StoreError::Forbidden("a group has one creator")),
        None => {
            return Err(StoreError::NotFound(
                "that user is not a member of the group",
            ))
        }
    }
    exec(
        tx,
        "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2",
        &[&group, &user, &role.as_str()],
    )
    .await?;
    Ok(())
}
