//! The `chat` binary with piped input against a real server on port 0: every wait is
//! for a line of output or an event, with a timeout, never a sleep.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use chat_client::{Client, Events};
use chat_proto::reply::GroupReply;
use chat_proto::request::{GroupRef, Request, UserRef};
use chat_proto::types::Msg;
use chat_proto::Event;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

/// How long any one expected line or event may take.
const WAIT: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve(dir, listener)
}

/// Runs a server on `listener` with the store in `dir`.
fn serve(dir: tempfile::TempDir, listener: TcpListener) -> Server {
    let addr = listener.local_addr().expect("local addr");
    let config = chat_server::Config::for_tests(dir.path().join("chat.db"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = chat_server::run(listener, config, shutdown).await {
            panic!("server failed: {e}");
        }
    });
    Server {
        addr,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl Server {
    async fn stop(self) {
        self.halt().await;
    }

    /// Stops the server, and starts a new one on the same address and store.
    async fn restart(self) -> Server {
        let (addr, dir) = self.halt().await;
        let listener = TcpListener::bind(addr).await.expect("bind again");
        serve(dir, listener)
    }

    async fn halt(mut self) -> (SocketAddr, tempfile::TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stops")
            .expect("server task");
        (self.addr, self._dir)
    }
}

/// A running `chat` process: stdin to write commands to, stdout read line by line.
struct Chat {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Chat {
    fn spawn(name: &'static str, addr: SocketAddr, args: &[&str], password: Option<&str>) -> Chat {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat"));
        cmd.arg(addr.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("CHAT_PASSWORD")
            .kill_on_drop(true);
        if let Some(password) = password {
            cmd.env("CHAT_PASSWORD", password);
        }
        let mut child = cmd.spawn().expect("start chat");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Chat {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to chat");
        stdin.flush().await.expect("flush");
    }

    fn dump(&self) -> String {
        format!("{} printed:\n{}", self.name, self.seen.join("\n"))
    }

    /// Waits for the next line that contains `needle`, skipping others.
    async fn expect(&mut self, needle: &str) -> String {
        self.expect_where(needle, |line| line.contains(needle))
            .await
    }

    /// Waits for the next line that satisfies `pred`.
    async fn expect_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "{}: output ended waiting for {what:?}\n{}",
                    self.name,
                    self.dump()
                ),
                Err(_) => panic!(
                    "{}: timed out waiting for {what:?}\n{}",
                    self.name,
                    self.dump()
                ),
            }
        }
    }

    /// Closes stdin and waits for the process to exit; returns its status and the
    /// remaining output.
    async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        self.stdin.take();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit\n{}", self.name, self.dump()))
            .expect("wait for chat");
        let mut rest = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            rest.push(line);
        }
        (status, rest)
    }

    /// Waits for the process to exit by itself (stdin kept open).
    async fn exits(mut self) -> ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit\n{}", self.name, self.dump()))
            .expect("wait for chat");
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            self.seen.push(line);
        }
        status
    }
}

/// The number after `prefix` in `line` (`"ok: registered alice with id 7"`, `"id "`).
fn number_after(line: &str, prefix: &str) -> i64 {
    let at = line.find(prefix).map(|at| at + prefix.len());
    let digits: String = at
        .map(|at| {
            line[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect()
        })
        .unwrap_or_default();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in {line:?}"))
}

/// A user driven through the client library.
async fn library_user(addr: SocketAddr, name: &str) -> (Client, Events, i64) {
    let (client, events) = Client::connect(addr).await.expect("connect");
    let id = client.register(name, "pw").await.expect("register").user.id;
    client.login_name(name, "pw").await.expect("login");
    (client, events, id)
}

/// The next event that satisfies `pred`, skipping others.
async fn next_event(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) if pred(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("connection closed waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn next_msg(events: &mut Events, text: &str) -> Msg {
    let event = next_event(
        events,
        text,
        |e| matches!(e, Event::Msg(m) if m.text == text),
    )
    .await;
    match event {
        Event::Msg(msg) => msg,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_session_runs_every_kind_of_command() {
    let server = start_server().await;
    let (bob, mut bob_events, bob_id) = library_user(server.addr, "bob").await;

    let mut alice = Chat::spawn(
        "alice",
        server.addr,
        &["--register", "alice"],
        Some("secret"),
    );
    let line = alice.expect("ok: registered alice with id ").await;
    let alice_id = number_after(&line, "with id ");
    alice
        .expect(&format!("ok: logged in as alice({alice_id})"))
        .await;
    alice
        .expect("[synced] 0 offline message(s) delivered")
        .await;

    // One-to-one, both ways.
    alice.send(&format!("chat:{bob_id}:hello bob")).await;
    alice.expect(&format!("sent to user {bob_id}")).await;
    let msg = next_msg(&mut bob_events, "hello bob").await;
    assert_eq!((msg.from, msg.from_name.as_str()), (alice_id, "alice"));
    assert_eq!((msg.to, msg.group), (Some(bob_id), None));
    bob.send(alice_id, "hi alice").await.expect("bob sends");
    let line = alice.expect("hi alice").await;
    assert!(line.starts_with("[msg] "), "{line}");
    assert!(
        line.ends_with(&format!(" bob({bob_id}): hi alice")),
        "{line}"
    );

    // Errors: from the server, and from the client's own parsing.
    alice.send("chat:999999:anyone there").await;
    alice.expect("error: not_found: ").await;
    alice.send("chat:bob:hi").await;
    alice.expect("error: user id must be a number").await;
    alice.send("dance").await;
    alice.expect("error: unknown command").await;

    // Friends (a request the other accepts), and presence.
    alice.send(&format!("addfriend:{bob_id}")).await;
    alice
        .expect(&format!(
            "ok: asked bob({bob_id}) to be your friend; waiting for an answer"
        ))
        .await;
    next_event(
        &mut bob_events,
        "friend_request",
        |e| matches!(e, Event::FriendRequest { from } if from.id == alice_id),
    )
    .await;
    bob.call_ok(&Request::AddFriend(UserRef { id: alice_id }))
        .await
        .expect("bob accepts");
    alice
        .expect(&format!(
            "[friend] bob({bob_id}) is now your friend (online)"
        ))
        .await;
    alice.send(&format!("addfriend:{bob_id}")).await;
    alice.expect("error: conflict: ").await;
    bob.close().await;
    alice
        .expect(&format!("[presence] bob({bob_id}) is offline"))
        .await;
    let (bob, mut bob_events) = Client::connect(server.addr).await.expect("connect");
    bob.login_id(bob_id, "pw").await.expect("bob again");
    alice
        .expect(&format!("[presence] bob({bob_id}) is online"))
        .await;

    // Groups.
    alice.send("opengroup:rustaceans:all about rust").await;
    let line = alice.expect("ok: created group ").await;
    let group = number_after(&line, "group ");
    assert!(line.ends_with("\"rustaceans\""), "{line}");
    let joined: GroupReply = bob
        .call(&Request::JoinGroup(GroupRef { group }))
        .await
        .expect("bob joins");
    assert_eq!(joined.group.id, group);
    alice.send(&format!("groupchat:{group}:hi group")).await;
    alice.expect(&format!("sent to group {group}")).await;
    let msg = next_msg(&mut bob_events, "hi group").await;
    assert_eq!((msg.from, msg.group), (alice_id, Some(group)));
    bob.group_send(group, "hello from bob")
        .await
        .expect("bob posts");
    let line = alice.expect("hello from bob").await;
    assert!(line.starts_with(&format!("[group {group}] ")), "{line}");
    assert!(
        line.ends_with(&format!(" bob({bob_id}): hello from bob")),
        "{line}"
    );
    alice
        .send(&format!("groupchat:{}:nobody home", group + 1000))
        .await;
    alice.expect("error: ").await;

    alice.send(&format!("list:{group}")).await;
    alice
        .expect(&format!("group {group} \"rustaceans\" members (2):"))
        .await;
    alice
        .expect_where("alice as creator", |l| {
            l.trim() == format!("{alice_id} alice creator online")
        })
        .await;

    // History, both kinds.
    alice.send(&format!("history:{bob_id}")).await;
    alice
        .expect(&format!("history with bob({bob_id}): 2 message(s)"))
        .await;
    alice.expect(&format!("alice({alice_id}): hello bob")).await;
    alice.expect(&format!("bob({bob_id}): hi alice")).await;
    alice.send(&format!("history:g:{group}")).await;
    alice
        .expect(&format!(
            "history of group {group} \"rustaceans\": 2 message(s)"
        ))
        .await;
    alice.expect(&format!("alice({alice_id}): hi group")).await;
    alice
        .expect(&format!("bob({bob_id}): hello from bob"))
        .await;

    // The conversation list; what alice's terminal showed is read, so bob gets a receipt.
    alice.send("conversations").await;
    alice.expect("conversations (2), most recent first:").await;
    alice.expect(&format!("bob({bob_id}) (online)")).await;
    next_event(
        &mut bob_events,
        "read",
        |e| matches!(e, Event::Read { user, .. } if *user == alice_id),
    )
    .await;

    // Lists.
    alice.send("users").await;
    alice.expect("online users (2):").await;
    alice.send("updatelist").await;
    alice
        .expect(&format!("current login user => id:{alice_id} name:alice"))
        .await;
    alice.expect(&format!("  {bob_id} bob online")).await;
    alice.send("showme").await;
    alice
        .expect(&format!("current login user => id:{alice_id} name:alice"))
        .await;

    // Undo it all; bob hears of it.
    alice.send(&format!("deletegroup:{group}")).await;
    alice.expect(&format!("ok: deleted group {group}")).await;
    next_event(
        &mut bob_events,
        "group_deleted",
        |e| matches!(e, Event::GroupDeleted { group: g } if *g == group),
    )
    .await;
    alice.send(&format!("removefriend:{bob_id}")).await;
    alice
        .expect(&format!("ok: bob({bob_id}) is no longer your friend"))
        .await;
    next_event(
        &mut bob_events,
        "friend_removed",
        |e| matches!(e, Event::FriendRemoved { user } if *user == alice_id),
    )
    .await;

    // A closed group: alice invites bob, who is told.
    alice.send("creategroup:inner circle").await;
    let line = alice.expect("ok: created group ").await;
    let inner = number_after(&line, "group ");
    alice.send(&format!("invite:{inner}:{bob_id}")).await;
    alice
        .expect(&format!("ok: invited bob({bob_id}) into group {inner}"))
        .await;
    next_event(
        &mut bob_events,
        "group_invite",
        |e| matches!(e, Event::GroupInvite(i) if i.group == inner && i.by.id == alice_id),
    )
    .await;

    // A friend request alice sees and declines; then she blocks bob, whose messages are
    // refused, and unblocks him.
    bob.call_ok(&Request::AddFriend(UserRef { id: alice_id }))
        .await
        .expect("bob asks");
    alice
        .expect(&format!("[friend] bob({bob_id}) asks to be your friend"))
        .await;
    alice.send("requests").await;
    alice
        .expect("friend requests to you (1), answer with addfriend:ID or decline:ID:")
        .await;
    alice.send(&format!("decline:{bob_id}")).await;
    alice
        .expect(&format!("ok: declined bob({bob_id})'s friend request"))
        .await;
    alice.send(&format!("block:{bob_id}")).await;
    alice.expect(&format!("ok: you block bob({bob_id})")).await;
    let refused = bob.send(alice_id, "let me in").await;
    assert_eq!(
        refused.err().and_then(|e| e.code()),
        Some(chat_proto::ErrorCode::Forbidden)
    );
    alice.send("blocked").await;
    alice.expect("you block (1):").await;
    alice.send(&format!("unblock:{bob_id}")).await;
    alice
        .expect(&format!("ok: you no longer block bob({bob_id})"))
        .await;

    // The end of input quits cleanly, after the last reply.
    alice.send("help").await;
    let (status, rest) = alice.finish().await;
    assert!(status.success(), "{status}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("logout")), "{rest:?}");

    // What alice saw was acked: nothing is replayed at her next login.
    let mut again = Chat::spawn(
        "alice again",
        server.addr,
        &["--login", "alice"],
        Some("secret"),
    );
    let synced = again.expect("[synced]").await;
    assert_eq!(
        synced,
        "[synced] 0 offline message(s) delivered",
        "{}",
        again.dump()
    );
    assert!(
        !again.seen.iter().any(|l| l.starts_with("[msg]")),
        "{}",
        again.dump()
    );
    let (status, _) = again.finish().await;
    assert!(status.success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_menu_reads_its_answers_from_input_and_offline_messages_wait() {
    let server = start_server().await;

    // carol uses the menu only: register, a wrong password, login by name.
    let mut carol = Chat::spawn("carol", server.addr, &[], None);
    carol
        .send("2\ncarol\npw\n1\ncarol\nwrong\n1\ncarol\npw")
        .await;
    let line = carol.expect("ok: registered carol with id ").await;
    let carol_id = number_after(&line, "with id ");
    carol.expect("error: auth_failed: ").await;
    carol
        .expect(&format!("ok: logged in as carol({carol_id})"))
        .await;
    carol
        .expect("[synced] 0 offline message(s) delivered")
        .await;
    carol.send("logout").await;
    carol.expect("ok: logged out").await;
    carol.expect("1) login").await;

    // dave, a second chat process, writes to carol while she is logged out.
    let mut dave = Chat::spawn(
        "dave",
        server.addr,
        &["--register", "dave", "--password", "pw"],
        None,
    );
    let line = dave.expect("ok: registered dave with id ").await;
    let dave_id = number_after(&line, "with id ");
    dave.expect("[synced]").await;
    dave.send(&format!("chat:{carol_id}:are you there?")).await;
    dave.expect("ok: message ").await;

    // carol logs in again on the same connection, by id, and gets it.
    carol.send(&format!("1\n{carol_id}\npw")).await;
    carol
        .expect(&format!("ok: logged in as carol({carol_id})"))
        .await;
    let line = carol.expect("are you there?").await;
    assert!(line.starts_with("[msg] "), "{line}");
    assert!(
        line.ends_with(&format!(" dave({dave_id}): are you there?")),
        "{line}"
    );
    carol
        .expect("[synced] 1 offline message(s) delivered")
        .await;

    // And answers live, with dave online.
    carol.send(&format!("chat:{dave_id}:yes")).await;
    let line = carol.expect("ok: message ").await;
    let yes_id = number_after(&line, "message ");
    let line = dave.expect(&format!("carol({carol_id}): yes")).await;
    assert!(line.starts_with("[msg] "), "{line}");

    // History pages backwards from a message id.
    carol.send(&format!("history:{dave_id}:{yes_id}")).await;
    carol
        .expect(&format!("history with dave({dave_id}): 1 message(s)"))
        .await;
    carol.expect("are you there?").await;

    // Joining and leaving a group through the client; what a member may not do.
    dave.send("opengroup:book club").await;
    let line = dave.expect("ok: created group ").await;
    let group = number_after(&line, "group ");
    carol.send(&format!("joingroup:{group}")).await;
    carol
        .expect(&format!("ok: joined group {group} \"book club\""))
        .await;
    carol.send("showme").await;
    carol.expect(&format!("  {group} book club [member]")).await;
    carol
        .expect(&format!("    {dave_id} dave creator online"))
        .await;
    carol.send(&format!("deletegroup:{group}")).await;
    carol.expect("error: forbidden: ").await;
    carol.send(&format!("quitgroup:{group}")).await;
    carol
        .expect(&format!("ok: left group {group} \"book club\""))
        .await;
    carol.send(&format!("list:{group}")).await;
    carol.expect("error: forbidden: ").await;

    carol.send("quit").await;
    assert!(carol.exits().await.success());
    let (status, _) = dave.finish().await;
    assert!(status.success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_from_the_command_line_exits_with_failure() {
    let server = start_server().await;
    let (_erin, _events, _) = library_user(server.addr, "erin").await;
    let mut chat = Chat::spawn("erin", server.addr, &["--login", "erin"], Some("not it"));
    chat.expect("error: auth_failed: ").await;
    assert!(!chat.exits().await.success());

    let mut chat = Chat::spawn("taken", server.addr, &["--register", "erin"], Some("pw"));
    chat.expect("error: conflict: ").await;
    assert!(!chat.exits().await.success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_elsewhere_kicks_the_client() {
    let server = start_server().await;
    let (first, _events, frank_id) = library_user(server.addr, "frank").await;
    first.close().await;
    let mut chat = Chat::spawn(
        "frank",
        server.addr,
        &["--login", &frank_id.to_string()],
        Some("pw"),
    );
    chat.expect(&format!("ok: logged in as frank({frank_id})"))
        .await;
    chat.expect("[synced]").await;

    let (other, _other_events) = Client::connect(server.addr).await.expect("connect");
    other
        .login_id(frank_id, "pw")
        .await
        .expect("login elsewhere");
    chat.expect("[kicked] logged_in_elsewhere").await;
    assert!(!chat.exits().await.success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_clear_error() {
    // A port that was just free: nothing listens there any more.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let mut chat = Chat::spawn("nowhere", addr, &["--login", "x"], Some("pw"));
    chat.expect("error: cannot connect to ").await;
    assert!(!chat.exits().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_its_session_after_a_server_restart() {
    let server = start_server().await;
    let (_bob, _bob_events, bob_id) = library_user(server.addr, "bob").await;
    let mut gina = Chat::spawn("gina", server.addr, &["--register", "gina"], Some("pw"));
    let line = gina.expect("ok: registered gina with id ").await;
    let gina_id = number_after(&line, "with id ");
    gina.expect("[synced]").await;

    let server = server.restart().await;
    gina.expect("[kicked] shutdown").await;
    gina.expect("[reconnecting]").await;
    gina.expect(&format!("[reconnected] logged in again as gina({gina_id})"))
        .await;
    gina.expect("[synced]").await;

    let (bob, mut bob_events) = Client::connect(server.addr).await.expect("connect");
    bob.login_id(bob_id, "pw").await.expect("bob again");
    gina.send(&format!("chat:{bob_id}:still here")).await;
    gina.expect("ok: message ").await;
    let msg = next_msg(&mut bob_events, "still here").await;
    assert_eq!(msg.from, gina_id);
    let (status, _) = gina.finish().await;
    assert!(status.success());
    server.stop().await;
}
