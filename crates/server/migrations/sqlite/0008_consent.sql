-- Consent (security issue 11, items 2 and 3): groups that can be closed, invitations,
-- bans that outlast a kick, friend requests and blocks.
--
-- Groups made before this version keep behaving as they did: open to anyone, history
-- shown in full to a new member. New groups are closed and show history from the join
-- unless their creator says otherwise.
ALTER TABLE chat_groups ADD COLUMN open INTEGER NOT NULL DEFAULT 1;
ALTER TABLE chat_groups ADD COLUMN shared_history INTEGER NOT NULL DEFAULT 1;

-- An invitation into a group, by its creator or one of its admins.
CREATE TABLE group_invites (
    group_id INTEGER NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    by_user INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_invites_by_user ON group_invites (user_id);

-- Someone removed from a group: it stays out until invited back.
CREATE TABLE group_bans (
    group_id INTEGER NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;

-- A friend request from one user to another, until accepted or declined.
CREATE TABLE friend_requests (
    from_user INTEGER NOT NULL REFERENCES users(id),
    to_user INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (from_user, to_user)
) WITHOUT ROWID;
CREATE INDEX friend_requests_to ON friend_requests (to_user);

-- user_id blocks blocked_id.
CREATE TABLE blocks (
    user_id INTEGER NOT NULL REFERENCES users(id),
    blocked_id INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;
