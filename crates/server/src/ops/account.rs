//! The account's own security: `change_password` and `logout_all` ("log out
//! everywhere"). A token is the key to an account for 30 days; someone who fears that a
//! token or the password leaked must be able to make every earlier token worthless.

use chat_proto::reply::{ok_frame, ChangePasswordReply, Empty};
use chat_proto::request::{ChangePassword, Rid};
use tokio::io::AsyncWrite;

use super::auth::{check_attempts, now_ms};
use super::check_len;
use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::password::{new_token, token_hash};
use crate::session::Session;

pub(crate) async fn logout_all<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let user = s.user()?.id;
    let revoked = s.ctx.store.revoke_tokens(user).await?;
    s.end_login().await;
    tracing::info!(user, revoked, "logged out everywhere");
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn change_password<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: ChangePassword,
) -> OpResult {
    let user = s.user()?.id;
    check_len("new_password", &req.new_password, 1, 128)?;
    // The current password, as a password login would check it (and as often).
    check_attempts(s)?;
    let hash = s
        .ctx
        .store
        .credentials_by_id(user)
        .await?
        .map(|c| c.password_hash);
    if !s.ctx.passwords.verify(req.password, hash).await {
        tracing::info!(user, "change_password: wrong current password");
        return Err(OpError::auth_failed());
    }
    let hash = s.ctx.passwords.hash(req.new_password).await.map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        OpError::internal()
    })?;
    s.ctx.store.set_password(user, &hash).await?;
    let token = if req.logout_everywhere {
        s.ctx.store.revoke_tokens(user).await?;
        let token = new_token();
        let ttl = s.ctx.config.token_ttl.as_millis() as i64;
        let hash = token_hash(&token);
        s.ctx
            .store
            .create_token(user, &hash, now_ms().saturating_add(ttl))
            .await?;
        if let Some(login) = s.login.as_mut() {
            login.token_hash = hash;
        }
        Some(token)
    } else {
        None
    };
    tracing::info!(
        user,
        logout_everywhere = token.is_some(),
        "password changed"
    );
    Ok(ok_frame(rid, &ChangePasswordReply { token }))
}
