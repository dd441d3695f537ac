//! Names cannot impersonate: look-alike names are one name, invisible and padded names
//! are refused, a name is shown as registered; `--admins` binds to existing accounts.

use serde_json::json;

use crate::util::{TestServer, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_looks_like_a_taken_one_is_taken() {
    let server = TestServer::start().await;
    let (_alice, alice_id) = server.register("alice").await;
    let (_jose, jose_id) = server.register("jos\u{e9}").await;
    let mut conn = server.connect().await;
    for name in [
        "alice",
        "Alice",
        "ALICE",
        "\u{430}lice",  // Cyrillic a
        "\u{ff41}lice", // fullwidth a
        "jose\u{301}",  // e and a combining acute: josé decomposed
        "JOS\u{c9}",
    ] {
        let reply = conn
            .request(json!({"op": "register", "name": name, "password": PASSWORD}))
            .await;
        assert_eq!(reply["error"]["code"], "conflict", "{name:?}: {reply}");
    }
    for name in [
        "ali\u{200b}ce",
        "alice ",
        " alice",
        "   ",
        "al\u{202e}ice",
        "a\u{a0}b",
    ] {
        let reply = conn
            .request(json!({"op": "register", "name": name, "password": PASSWORD}))
            .await;
        assert_eq!(reply["error"]["code"], "bad_request", "{name:?}: {reply}");
    }
    // A group name follows the same rules for what it may contain.
    let (mut bob, _) = server.user("bob").await;
    bob.expect_err(
        json!({"op": "create_group", "name": "ad\u{200b}mins"}),
        "bad_request",
    )
    .await;

    // Logging in by any form of the name finds the account; it shows as registered.
    let (reply, _) = conn
        .login(json!({"name": "ALICE", "password": PASSWORD}))
        .await;
    assert_eq!(reply["user"], json!({"id": alice_id, "name": "alice"}));
    let mut other = server.connect().await;
    let (reply, _) = other
        .login(json!({"name": "jose\u{301}", "password": PASSWORD}))
        .await;
    assert_eq!(reply["user"], json!({"id": jose_id, "name": "jos\u{e9}"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_bound_to_accounts_that_exist_at_start() {
    // A name nobody has is refused at start: whoever registered it first would be admin.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = chat_server::Config::for_tests(dir.path().join("chat.db"));
    let _schema = match crate::STORE {
        crate::util::StoreKind::Sqlite => None,
        crate::util::StoreKind::Postgres => {
            let schema = crate::util::PgSchema::create().await;
            config.db = chat_server::Db::Postgres(schema.url.clone());
            Some(schema)
        }
    };
    config.admins = vec!["root".into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = tokio::time::timeout(
        crate::util::WAIT,
        chat_server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("run did not return");
    let err = result.expect_err("a server with an unknown admin name started");
    assert!(err.to_string().contains("--admins"), "{err}");

    // An existing account is an admin, whatever form of its name was given.
    let server = TestServer::start_with(|c| c.admins = vec!["root".into()]).await;
    let (mut root, _) = server.user("root").await;
    root.ok(json!({"op": "broadcast", "text": "I am root"}))
        .await;
    let mut impostor = server.connect().await;
    let reply = impostor
        .request(json!({"op": "register", "name": "Root", "password": PASSWORD}))
        .await;
    assert_eq!(reply["error"]["code"], "conflict", "{reply}");
}
