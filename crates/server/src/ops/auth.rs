//! `register`, `login`, `logout`, `whoami`.

use std::time::{SystemTime, UNIX_EPOCH};

use chat_proto::reply::{ok_frame, Empty, LoginReply, UserReply};
use chat_proto::request::{Login, Register, Rid};
use chat_proto::types::{Friend, GroupInfo, Member, User};
use tokio::io::AsyncWrite;

use super::{check_len, check_name, friends};
use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::password::{new_token, token_hash};
use crate::session::Session;

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) async fn register<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Register,
) -> OpResult {
    check_name("name", &req.name)?;
    check_len("password", &req.password, 1, 128)?;
    check_attempts(s)?;
    // Refuse a taken name before paying for a hash; the insert checks again.
    if s.ctx.store.credentials_by_name(&req.name).await?.is_some() {
        return Err(OpError::new(
            chat_proto::ErrorCode::Conflict,
            "that name is taken",
        ));
    }
    let hash = s.ctx.passwords.hash(req.password).await.map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        OpError::internal()
    })?;
    let user = s.ctx.store.create_user(&req.name, &hash).await?;
    tracing::info!(user = user.id, "registered");
    Ok(ok_frame(rid, &UserReply { user }))
}

pub(crate) async fn login<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Login,
) -> OpResult {
    let method = if req.token.is_some() {
        "token"
    } else {
        "password"
    };
    let result = log_in(s, rid, req).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.code == chat_proto::ErrorCode::RateLimited => "rate_limited",
        Err(e) if e.code == chat_proto::ErrorCode::AuthFailed => "failed",
        Err(_) => "error",
    };
    s.ctx.metrics.login(method, outcome);
    result
}

async fn log_in<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Login,
) -> OpResult {
    let (user, token) = match (req.token, req.password) {
        (Some(token), None) if req.id.is_none() && req.name.is_none() => {
            let hash = token_hash(&token);
            let user = s
                .ctx
                .store
                .token_user(&hash, now_ms())
                .await?
                .ok_or_else(OpError::auth_failed)?;
            (user, token)
        }
        (None, Some(password)) => {
            check_attempts(s)?;
            let credentials = match (req.id, req.name) {
                (Some(id), None) => s.ctx.store.credentials_by_id(id).await?,
                (None, Some(name)) => s.ctx.store.credentials_by_name(&name).await?,
                _ => return Err(OpError::bad_request("login: give `id` or `name`, not both")),
            };
            let (user, hash) = match credentials {
                Some(c) => (Some(c.user), Some(c.password_hash)),
                None => (None, None),
            };
            if !s.ctx.passwords.verify(password, hash).await {
                tracing::info!("password login failed");
                return Err(OpError::auth_failed());
            }
            let user = user.ok_or_else(OpError::auth_failed)?;
            let token = new_token();
            let ttl = s.ctx.config.token_ttl.as_millis() as i64;
            s.ctx
                .store
                .create_token(user.id, &token_hash(&token), now_ms().saturating_add(ttl))
                .await?;
            (user, token)
        }
        _ => {
            return Err(OpError::bad_request(
                "login: give `token`, or `password` with `id` or `name`",
            ))
        }
    };
    if !s.ctx.login_limits.take(user.id) {
        tracing::info!(user = user.id, "too many logins for one account");
        return Err(OpError::new(
            chat_proto::ErrorCode::RateLimited,
            "too many logins for this account; wait a little",
        ));
    }
    // A login on a logged-in connection ends the current login first.
    s.end_login().await;
    // One read for everything the reply needs. Pending messages are read after the
    // session is in the hub (see `Session::catch_up`), so none can slip between the two.
    let (friends_cap, members) = s.dialect.login_lists();
    let page = crate::store::GroupsPage {
        after: 0,
        limit: chat_proto::reply::LOGIN_GROUPS + 1,
        members,
    };
    let mut snapshot = s.ctx.store.snapshot(user.id, page).await?;
    let admin = snapshot.admin || s.ctx.admins.contains(&user.id);
    let friend_ids: Vec<_> = snapshot.friends.iter().map(|f| f.id).collect();
    let fresh = s.start_login(user.clone(), token_hash(&token), friend_ids);
    // In a cluster, this node listens to the user's and the groups' channels before the
    // session reads what is pending, so that nothing committed in between is missed.
    let groups = std::mem::take(&mut snapshot.group_ids);
    s.ctx.bus.listen(user.id, &groups).await;
    if fresh {
        let friends = s
            .login
            .as_ref()
            .map(|l| l.friends.as_slice())
            .unwrap_or_default();
        friends::announce_presence(&s.ctx, user.id, true, friends);
    }
    tracing::debug!("logged in");
    let hub = &s.ctx.hub;
    let friends_more = snapshot.friends.len() > friends_cap;
    let friends = snapshot
        .friends
        .into_iter()
        .take(friends_cap)
        .map(|f| Friend {
            online: hub.is_online(f.id),
            id: f.id,
            name: f.name,
        })
        .collect();
    let groups_more = snapshot.groups.len() > chat_proto::reply::LOGIN_GROUPS;
    let groups = snapshot
        .groups
        .into_iter()
        .take(chat_proto::reply::LOGIN_GROUPS)
        .map(|g| super::groups::group_info(hub, g))
        .collect::<Vec<GroupInfo>>();
    Ok(ok_frame(
        rid,
        &LoginReply {
            user,
            token,
            friends,
            friends_more,
            groups,
            groups_more,
            admin,
        },
    ))
}

/// Registrations and password logins are limited per source address: guessing
/// passwords must be slow.
pub(crate) fn check_attempts<W: AsyncWrite + Unpin, D: Dialect>(
    s: &Session<W, D>,
) -> Result<(), OpError> {
    if s.ctx.auth_limits.take(crate::limits::address_key(s.peer)) {
        Ok(())
    } else {
        tracing::info!(peer = %s.peer, "too many registrations or password logins");
        Err(OpError::new(
            chat_proto::ErrorCode::RateLimited,
            "too many attempts from your address; wait a little",
        ))
    }
}

pub(crate) async fn logout<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    s.user()?;
    if let Some(login) = s.end_login().await {
        s.ctx.store.delete_token(&login.token_hash).await?;
        tracing::debug!(user = login.user.id, "logged out");
    }
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) fn whoami<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let user: User = s.user()?.clone();
    Ok(ok_frame(rid, &UserReply { user }))
}

/// A member as the client sees it.
pub(crate) fn member(hub: &crate::hub::Hub, user: User, role: chat_proto::types::Role) -> Member {
    Member {
        online: hub.is_online(user.id),
        id: user.id,
        name: user.name,
        role,
    }
}
