-- A user name is unique by its key (NFKC, lower-cased, UTS #39 confusable skeleton; see
-- crates/server/src/names.rs), not by its bytes: `alice`, `Alice` and Cyrillic `аlice`
-- are one name. The key is computed in Rust: the server fills it for existing users
-- right after this migration (a name whose key another user already holds keeps a key
-- of its own, `key#id`, so that both accounts go on working).
ALTER TABLE users ADD COLUMN name_key TEXT;
CREATE UNIQUE INDEX users_by_name_key ON users (name_key);
