-- Consent (security issue 11, items 2 and 3): groups that can be closed, invitations,
-- bans that outlast a kick, friend requests and blocks.
--
-- Groups made before this version keep behaving as they did: open to anyone, history
-- shown in full to a new member. New groups are closed and show history from the join
-- unless their creator says otherwise.
ALTER TABLE chat_groups ADD COLUMN open BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE chat_groups ADD COLUMN shared_history BOOLEAN NOT NULL DEFAULT TRUE;

CREATE TABLE group_invites (
    group_id BIGINT NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    by_user BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_invites_by_user ON group_invites (user_id);

CREATE TABLE group_bans (
    group_id BIGINT NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE friend_requests (
    from_user BIGINT NOT NULL REFERENCES users(id),
    to_user BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (from_user, to_user)
);
CREATE INDEX friend_requests_to ON friend_requests (to_user);

CREATE TABLE blocks (
    user_id BIGINT NOT NULL REFERENCES users(id),
    blocked_id BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);
