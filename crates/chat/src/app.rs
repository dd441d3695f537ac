//! One run of the client: connect, the login menu, then commands until logout or quit.
//!
//! The session is straight-line code on one task. Every place that waits (for a line of
//! input in [`App::read_line`], for a reply in [`App::wait`]) also shows the events that
//! arrive meanwhile and sends the heartbeat, so nothing waits behind anything else.
//! Commands run one at a time, each waiting for its reply: piped input is processed in
//! order, and the reply to `login` is printed before the messages replayed after it.
//!
//! Before login the server closes idle connections after its login timeout; the client
//! then connects again, quietly, when the user has typed their credentials. After login a
//! lost connection (a server restart, a network hiccup) is resumed with the session
//! token, retried for about half a minute; a `kicked` for logging in elsewhere is final.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chat_client::{Client, ClientError, Events};
use chat_proto::reply::{
    ConversationsReply, FriendReply, FriendsReply, GroupReply, GroupsReply, HistoryReply,
    LoginReply, MembersReply, MsgReply, UserReply, UsersReply,
};
use chat_proto::request::{self, GroupRef, Page, Request, UserRef};
use chat_proto::types::{ConvWith, Friend, GroupInfo, Member, Role, User};
use chat_proto::{ErrorCode, Event, GroupId, MsgId, UserId};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::command::{self, Command, Target};

mod consent;
use crate::format::{self, clean, who};
use crate::term::{Input, Printer};

/// Well inside the server's idle timeout (90 s by default).
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last acks may take when quitting.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the replay after login before taking commands anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds to wait before each attempt to resume a lost session.
const RESUME_DELAYS: &[u64] = &[0, 1, 2, 3, 5, 8, 10];
/// Messages per `history` page.
const HISTORY_PAGE: i64 = 50;

/// What to do before showing the menu, from the command line.
pub(crate) enum AutoLogin {
    /// Register this name, then log in as it.
    Register {
        name: String,
        password: Option<String>,
    },
    /// Log in with this name or id.
    Login {
        who: String,
        password: Option<String>,
    },
}

/// Why the client stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The user quit, or input ended.
    Quit,
    /// The server could not be reached, or the connection was lost after login.
    Lost,
    /// The login asked for on the command line failed.
    LoginFailed,
}

struct Conn {
    client: Client,
    events: Events,
    /// False once the event stream has ended (the connection closed).
    open: bool,
}

/// The logged-in user and what the client knows of their world.
struct Me {
    user: User,
    /// Resumes the session after a lost connection.
    token: String,
    friends: Vec<Friend>,
    groups: Vec<GroupInfo>,
}

/// A user to log in as.
enum LoginAs {
    Id(UserId),
    Name(String),
}

/// Where the server is, and how to reach it.
pub(crate) struct Server {
    pub(crate) addr: String,
    /// Speak TLS, trusting this CA file (PEM) or, when `None`, the system's CAs.
    pub(crate) tls: Option<Option<std::path::PathBuf>>,
}

impl Server {
    async fn dial(&self) -> Result<(Client, chat_client::Events), chat_client::ClientError> {
        match &self.tls {
            None => Client::connect(self.addr.as_str()).await,
            Some(ca) => {
                // The certificate must name the host part of the address.
                let host = self
                    .addr
                    .rsplit_once(':')
                    .map_or(self.addr.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                Client::connect_tls(self.addr.as_str(), host, ca.as_deref()).await
            }
        }
    }
}

pub(crate) struct App {
    addr: String,
    target: Server,
    out: Printer,
    input: Input,
    conn: Option<Conn>,
    me: Option<Me>,
    /// Messages shown since the login, until `synced` arrives.
    replayed: Option<usize>,
    /// The highest message id shown in this login, and the highest acked.
    shown: MsgId,
    acked: MsgId,
    /// Conversations with messages shown and not yet marked read: conv -> highest seq.
    to_read: HashMap<i64, i64>,
    /// The names of the users seen so far (friends, members, senders), for labels.
    names: HashMap<UserId, String>,
    /// Why the server ended this login, if it said so.
    kicked: Option<String>,
    /// Acks and pings in flight; awaited (briefly) before exiting.
    tasks: Vec<JoinHandle<()>>,
    ping: Interval,
}

/// Runs the client against `addr` and tells how it ended.
pub(crate) async fn run(target: Server, auto: Option<AutoLogin>, plain: bool) -> Exit {
    let addr = target.addr.clone();
    let (input, out) = Input::open(plain);
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut app = App {
        addr,
        target,
        out,
        input,
        conn: None,
        me: None,
        replayed: None,
        shown: 0,
        acked: 0,
        to_read: HashMap::new(),
        names: HashMap::new(),
        kicked: None,
        tasks: Vec::new(),
        ping,
    };
    let exit = match app.session(auto).await {
        Ok(()) => Exit::Quit,
        Err(exit) => exit,
    };
    app.finish().await;
    exit
}

/// The next event of an open connection; never resolves without one.
async fn next_event(conn: &mut Option<Conn>) -> Option<Event> {
    match conn {
        Some(conn) if conn.open => conn.events.next().await,
        _ => std::future::pending().await,
    }
}

/// Prints a failed request as `error: <code>: <message>`.
fn report(out: &Printer, error: &ClientError) {
    match error {
        ClientError::Server(body) => {
            out.line(format!("error: {}: {}", body.code, clean(&body.message)));
        }
        ClientError::Closed => out.line("error: connection closed"),
        ClientError::Decode(e) => out.line(format!("error: unexpected reply from the server: {e}")),
        ClientError::Io(e) => out.line(format!("error: {e}")),
        ClientError::Tls(e) => out.line(format!("error: TLS: {e}")),
    }
}

fn menu() -> Vec<String> {
    vec![
        "======================".to_string(),
        "1) login".to_string(),
        "2) register".to_string(),
        "3) quit".to_string(),
        "======================".to_string(),
    ]
}

impl App {
    async fn session(&mut self, auto: Option<AutoLogin>) -> Result<(), Exit> {
        self.connect().await?;
        if let Some(auto) = auto {
            let logged_in = match auto {
                AutoLogin::Register { name, password } => {
                    let password = self.password(password).await?;
                    self.register(&name, &password).await?
                        && self.login(LoginAs::Name(name), &password).await?
                }
                AutoLogin::Login { who, password } => {
                    let password = self.password(password).await?;
                    self.login(login_as(&who), &password).await?
                }
            };
            if !logged_in {
                return Err(Exit::LoginFailed);
            }
            self.chat().await?;
        }
        loop {
            self.out.lines(menu());
            let choice = self.read_line("choice: ", false).await?;
            match choice.trim() {
                "1" | "login" => {
                    let who = self.read_line("user id or name: ", false).await?;
                    let password = self.read_line("password: ", true).await?;
                    if self.login(login_as(&who), &password).await? {
                        self.chat().await?;
                    }
                }
                "2" | "register" => {
                    let name = self.read_line("user name: ", false).await?;
                    let password = self.read_line("password: ", true).await?;
                    self.register(name.trim(), &password).await?;
                }
                "3" | "quit" | "exit" => return Ok(()),
                "" => {}
                _ => self.out.line("error: choose 1, 2 or 3"),
            }
        }
    }

    /// The password given on the command line, or one read from input.
    async fn password(&mut self, given: Option<String>) -> Result<String, Exit> {
        match given {
            Some(password) => Ok(password),
            None => self.read_line("password: ", true).await,
        }
    }

    async fn connect(&mut self) -> Result<(), Exit> {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, self.target.dial());
        match connect.await {
            Ok(Ok((client, events))) => {
                self.conn = Some(Conn {
                    client,
                    events,
                    open: true,
                });
                Ok(())
            }
            Ok(Err(e)) => {
                self.out
                    .line(format!("error: cannot connect to {}: {e}", self.addr));
                Err(Exit::Lost)
            }
            Err(_) => {
                self.out
                    .line(format!("error: cannot connect to {}: timed out", self.addr));
                Err(Exit::Lost)
            }
        }
    }

    /// A client on an open connection. Before login a closed connection (the server's
    /// login timeout) is opened again; after login [`App::resume`] does that.
    async fn client(&mut self) -> Result<Client, Exit> {
        match &self.conn {
            Some(conn) if conn.open => Ok(conn.client.clone()),
            _ if self.me.is_some() => Err(Exit::Lost),
            _ => {
                self.connect().await?;
                match &self.conn {
                    Some(conn) => Ok(conn.client.clone()),
                    None => Err(Exit::Lost),
                }
            }
        }
    }

    /// Sends a request and waits for its reply, showing events meanwhile. `Ok(Err(_))`
    /// is a request that failed; `Err(_)` ends the client.
    async fn call<T: DeserializeOwned>(
        &mut self,
        req: &Request,
    ) -> Result<Result<T, ClientError>, Exit> {
        let client = self.client().await?;
        let reply = self.wait(client.call::<T>(req)).await?;
        if matches!(reply, Err(ClientError::Closed)) && self.me.is_none() {
            // Closed before login, maybe just now: once more on a fresh connection.
            if let Some(conn) = &mut self.conn {
                conn.open = false;
            }
            let client = self.client().await?;
            return self.wait(client.call::<T>(req)).await;
        }
        Ok(reply)
    }

    /// Waits for `fut`, showing events and keeping the session alive meanwhile.
    async fn wait<F: Future>(&mut self, fut: F) -> Result<F::Output, Exit> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                // The reply first: the login reply must print before the replayed messages.
                biased;
                out = &mut fut => return Ok(out),
                event = next_event(&mut self.conn) => self.on_event(event).await?,
                _ = self.ping.tick() => self.heartbeat(),
            }
        }
    }

    /// Reads one line of input, showing events and keeping the session alive meanwhile.
    /// The end of input quits.
    async fn read_line(&mut self, prompt: &str, secret: bool) -> Result<String, Exit> {
        self.input.prompt(prompt, secret);
        loop {
            tokio::select! {
                // Events first: what has arrived shows before the next command runs.
                biased;
                event = next_event(&mut self.conn) => self.on_event(event).await?,
                line = self.input.recv() => return line.ok_or(Exit::Quit),
                _ = self.ping.tick() => self.heartbeat(),
            }
        }
    }

    /// Registers; prints the outcome and tells whether it worked.
    async fn register(&mut self, name: &str, password: &str) -> Result<bool, Exit> {
        let req = Request::Register(request::Register {
            name: name.to_string(),
            password: password.to_string(),
        });
        match self.call::<UserReply>(&req).await? {
            Ok(reply) => {
                self.out.line(format!(
                    "ok: registered {} with id {}",
                    clean(&reply.user.name),
                    reply.user.id
                ));
                Ok(true)
            }
            Err(e) => {
                report(&self.out, &e);
                Ok(false)
            }
        }
    }

    /// Logs in; prints the overview and tells whether it worked. A number is tried as an
    /// id first, then as a name (names may be digits too).
    async fn login(&mut self, who: LoginAs, password: &str) -> Result<bool, Exit> {
        let by_name = |name: String| {
            Request::Login(request::Login {
                name: Some(name),
                password: Some(password.to_string()),
                ..Default::default()
            })
        };
        let mut reply = match &who {
            LoginAs::Id(id) => {
                let req = Request::Login(request::Login {
                    id: Some(*id),
                    password: Some(password.to_string()),
                    ..Default::default()
                });
                self.call::<LoginReply>(&req).await?
            }
            LoginAs::Name(name) => self.call::<LoginReply>(&by_name(name.clone())).await?,
        };
        if let (LoginAs::Id(id), Err(e)) = (&who, &reply) {
            if e.code() == Some(ErrorCode::AuthFailed) {
                reply = self.call::<LoginReply>(&by_name(id.to_string())).await?;
            }
        }
        match reply {
            Ok(reply) => {
                let name = who_of(&reply.user);
                self.logged_in(reply);
                self.show_me();
                self.out.line(format!("ok: logged in as {name}"));
                if self.input.interactive() {
                    self.out.line("type help for the commands");
                }
                Ok(true)
            }
            Err(e) => {
                report(&self.out, &e);
                Ok(false)
            }
        }
    }

    /// Takes in the login reply; the replay of pending messages follows.
    fn logged_in(&mut self, reply: LoginReply) {
        if reply.friends_more || reply.groups_more {
            self.out.line(
                "note: the login lists only your first friends and groups; updatelist shows every friend",
            );
        }
        self.learn(reply.user.id, &reply.user.name);
        self.learn_friends(&reply.friends);
        self.learn_groups(&reply.groups);
        self.me = Some(Me {
            user: reply.user,
            token: reply.token,
            friends: reply.friends,
            groups: reply.groups,
        });
        self.replayed = Some(0);
        self.shown = 0;
        self.acked = 0;
        self.kicked = None;
        self.ping.reset();
    }

    /// After a lost connection: connects again and resumes the session with its token,
    /// retrying for about half a minute (a server restart), unless the user logged in
    /// elsewhere. `Err` ends the client.
    async fn resume(&mut self) -> Result<(), Exit> {
        let elsewhere =
            self.kicked.as_deref() == Some(chat_proto::event::kick_reason::LOGGED_IN_ELSEWHERE);
        let token = match &self.me {
            Some(me) if !elsewhere => me.token.clone(),
            _ => {
                self.me = None;
                self.out.line("error: connection closed by the server");
                return Err(Exit::Lost);
            }
        };
        self.out
            .line("[reconnecting] the connection was lost; connecting again");
        let mut last = String::from("connection closed");
        for delay in RESUME_DELAYS {
            tokio::time::sleep(Duration::from_secs(*delay)).await;
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, self.target.dial());
            let (client, events) = match connect.await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    last = e.to_string();
                    continue;
                }
                Err(_) => {
                    last = "timed out".to_string();
                    continue;
                }
            };
            self.conn = Some(Conn {
                client: client.clone(),
                events,
                open: true,
            });
            match tokio::time::timeout(CONNECT_TIMEOUT, client.login_token(&token)).await {
                Ok(Ok(reply)) => {
                    let name = who_of(&reply.user);
                    self.logged_in(reply);
                    self.out
                        .line(format!("[reconnected] logged in again as {name}"));
                    return Ok(());
                }
                Ok(Err(e @ ClientError::Server(_))) => {
                    // The token expired or was revoked: retrying will not help.
                    report(&self.out, &e);
                    last = e.to_string();
                    break;
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".to_string(),
            }
        }
        self.me = None;
        self.out
            .line(format!("error: connection lost: {}", clean(&last)));
        Err(Exit::Lost)
    }

    /// Commands until logout (`Ok`) or quit (`Err(Exit::Quit)`).
    async fn chat(&mut self) -> Result<(), Exit> {
        self.wait_synced().await?;
        while let Some(me) = &self.me {
            let prompt = format!("{}> ", clean(&me.user.name));
            let line = self.read_line(&prompt, false).await?;
            match command::parse(&line) {
                Ok(None) => {}
                Ok(Some(Command::Quit)) => return Err(Exit::Quit),
                Ok(Some(cmd)) => self.execute(cmd).await?,
                Err(e) => self.out.line(format!("error: {e}")),
            }
        }
        Ok(())
    }

    /// Shows the messages replayed after login before taking the first command, so that
    /// a script's output is in a stable order and nothing replayed is cut off by its end.
    async fn wait_synced(&mut self) -> Result<(), Exit> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while self.replayed.is_some() {
            tokio::select! {
                biased;
                event = next_event(&mut self.conn) => self.on_event(event).await?,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(())
    }

    async fn execute(&mut self, cmd: Command) -> Result<(), Exit> {
        match cmd {
            Command::Chat { to, text } => {
                let cmid = Some(new_cmid());
                let req = Request::Send(request::Send { to, text, cmid });
                if let Some(reply) = self.ok::<MsgReply>(&req).await? {
                    let to = self.user_label(to);
                    let id = reply.msg.id;
                    self.out.line(format!("ok: message {id} sent to {to}"));
                }
            }
            Command::GroupChat { group, text } => {
                let cmid = Some(new_cmid());
                let req = Request::GroupSend(request::GroupSend { group, text, cmid });
                if let Some(reply) = self.ok::<MsgReply>(&req).await? {
                    let id = reply.msg.id;
                    self.out
                        .line(format!("ok: message {id} sent to group {group}"));
                }
            }
            Command::AddFriend(id) => {
                let req = Request::AddFriend(UserRef { id });
                if let Some(reply) = self.ok::<FriendReply>(&req).await? {
                    match reply.friend {
                        Some(f) => {
                            self.out.line(format!(
                                "ok: {} is now your friend ({})",
                                who(&f.name, f.id),
                                if f.online { "online" } else { "offline" }
                            ));
                            self.upsert_friend(f);
                        }
                        None => {
                            let label = self.user_label(id);
                            self.out.line(format!(
                                "ok: asked {label} to be your friend; waiting for an answer"
                            ));
                        }
                    }
                }
            }
            Command::RemoveFriend(id) => {
                let req = Request::RemoveFriend(UserRef { id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let label = self.user_label(id);
                    self.out
                        .line(format!("ok: {label} is no longer your friend"));
                    if let Some(me) = &mut self.me {
                        me.friends.retain(|f| f.id != id);
                    }
                }
            }
            Command::CreateGroup { name, desc, open } => {
                let req = Request::CreateGroup(request::CreateGroup {
                    name,
                    desc,
                    open,
                    shared_history: false,
                });
                if let Some(reply) = self.ok::<GroupReply>(&req).await? {
                    let g = reply.group;
                    self.out.line(format!(
                        "ok: created {}",
                        format::group_title(g.id, Some(&g.name))
                    ));
                    if let Some(me) = &mut self.me {
                        let creator = Member {
                            id: me.user.id,
                            name: me.user.name.clone(),
                            role: Role::Creator,
                            online: true,
                        };
                        me.groups.push(GroupInfo {
                            id: g.id,
                            name: g.name,
                            desc: g.desc,
                            role: g.role,
                            open: g.open,
                            shared_history: g.shared_history,
                            member_count: 1,
                            members: vec![creator],
                        });
                    }
                }
            }
            Command::JoinGroup(group) => {
                let req = Request::JoinGroup(GroupRef { group });
                if let Some(reply) = self.ok::<GroupReply>(&req).await? {
                    let g = reply.group;
                    self.out.line(format!(
                        "ok: joined {}",
                        format::group_title(g.id, Some(&g.name))
                    ));
                    let members = self.all_members(group).await?.unwrap_or_default();
                    self.learn_members(&members);
                    if let Some(me) = &mut self.me {
                        me.groups.retain(|known| known.id != g.id);
                        me.groups.push(GroupInfo {
                            id: g.id,
                            name: g.name,
                            desc: g.desc,
                            role: g.role,
                            open: g.open,
                            shared_history: g.shared_history,
                            member_count: members.len() as i64,
                            members,
                        });
                    }
                }
            }
            Command::QuitGroup(group) => {
                let req = Request::LeaveGroup(GroupRef { group });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let title = self.group_label(group);
                    self.out.line(format!("ok: left {title}"));
                    self.forget_group(group);
                }
            }
            Command::DeleteGroup(group) => {
                let req = Request::DeleteGroup(GroupRef { group });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let title = self.group_label(group);
                    self.out.line(format!("ok: deleted {title}"));
                    self.forget_group(group);
                }
            }
            Command::List(group) => {
                if let Some(members) = self.all_members(group).await? {
                    self.learn_members(&members);
                    let mut lines = vec![format!(
                        "{} members ({}):",
                        self.group_label(group),
                        members.len()
                    )];
                    lines.extend(members.iter().map(|m| format::member(m, "  ")));
                    self.out.lines(lines);
                    if let Some(g) = self.group_mut(group) {
                        g.member_count = members.len() as i64;
                        g.members = members;
                    }
                }
            }
            Command::History { target, before } => self.history(target, before).await?,
            Command::ShowMe => self.show_me(),
            Command::UpdateList => {
                let friends = self.all_friends().await?;
                let groups = self
                    .ok::<GroupsReply>(&Request::Groups(Page::default()))
                    .await?;
                if let Some(friends) = &friends {
                    self.learn_friends(friends);
                }
                if let Some(groups) = &groups {
                    self.learn_groups(&groups.groups);
                }
                if let Some(me) = &mut self.me {
                    if let Some(friends) = friends {
                        me.friends = friends;
                    }
                    if let Some(groups) = groups {
                        me.groups = groups.groups;
                    }
                }
                self.show_me();
            }
            Command::Kick { id, reason } => {
                let req = Request::Kick(request::Kick { id, reason });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    self.out.line(format!("ok: kicked {}", self.user_label(id)));
                }
            }
            Command::Mute { id, seconds } => {
                let req = Request::Mute(request::Mute { id, seconds });
                if let Some(reply) = self.ok::<chat_proto::reply::MuteReply>(&req).await? {
                    self.out.line(format!(
                        "ok: muted {} until {}",
                        self.user_label(id),
                        format::stamp(reply.until)
                    ));
                }
            }
            Command::Unmute(id) => {
                let req = Request::Unmute(request::UserRef { id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    self.out
                        .line(format!("ok: unmuted {}", self.user_label(id)));
                }
            }
            Command::Broadcast(text) => {
                let req = Request::Broadcast(request::Broadcast { text });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    self.out.line("ok: broadcast sent");
                }
            }
            Command::GroupKick { group, id } => {
                let req = Request::GroupKick(request::GroupUser { group, id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let title = self.group_label(group);
                    self.out
                        .line(format!("ok: removed {} from {title}", self.user_label(id)));
                }
            }
            Command::Shutdown => {
                let req = Request::Shutdown(request::Shutdown::default());
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    self.out.line("ok: the server is shutting down");
                }
            }
            Command::Conversations => {
                let req = Request::Conversations(request::Conversations::default());
                if let Some(reply) = self.ok::<ConversationsReply>(&req).await? {
                    let mut lines = vec![format!(
                        "conversations ({}), most recent first:",
                        reply.conversations.len()
                    )];
                    for c in &reply.conversations {
                        let with = match &c.with {
                            ConvWith::Direct { peer } => {
                                self.learn(peer.id, &peer.name);
                                let state = if peer.online { "online" } else { "offline" };
                                format!("{} ({state})", who(&peer.name, peer.id))
                            }
                            ConvWith::Group { group, name } => {
                                format!("group {} {}", group, clean(name))
                            }
                        };
                        let unread = match c.unread {
                            0 => String::new(),
                            n if n >= chat_proto::types::UNREAD_CAP => {
                                format!(", {}+ unread", chat_proto::types::UNREAD_CAP)
                            }
                            n => format!(", {n} unread"),
                        };
                        let seen = match c.peer_read {
                            Some(read) if read > 0 => format!(", they read up to #{read}"),
                            _ => String::new(),
                        };
                        let last = c.last.as_ref().map_or(String::new(), |m| {
                            format!(": {}: {}", who(&m.from_name, m.from), clean(&m.text))
                        });
                        lines.push(format!("  {with}{unread}{seen}{last}"));
                    }
                    self.out.lines(lines);
                }
            }
            Command::Users => {
                if let Some(reply) = self.ok::<UsersReply>(&Request::Users).await? {
                    for u in &reply.users {
                        self.learn(u.id, &u.name);
                    }
                    let mut lines = vec![format!("online users ({}):", reply.users.len())];
                    lines.extend(
                        reply
                            .users
                            .iter()
                            .map(|u| format!("  {} {}", u.id, clean(&u.name))),
                    );
                    self.out.lines(lines);
                }
            }
            c @ (Command::Invite { .. }
            | Command::Invites
            | Command::DeclineInvite(_)
            | Command::Requests
            | Command::Decline(_)
            | Command::Block(_)
            | Command::Unblock(_)
            | Command::Blocked) => self.consent(c).await?,
            Command::Help => {
                let mut lines = vec!["commands:".to_string()];
                lines.extend(
                    command::USAGE
                        .iter()
                        .map(|(usage, what)| format!("  {usage:<26} {what}")),
                );
                self.out.lines(lines);
            }
            Command::Logout => {
                if self
                    .ok::<serde_json::Value>(&Request::Logout)
                    .await?
                    .is_some()
                {
                    self.me = None;
                    self.replayed = None;
                    self.out.line("ok: logged out");
                }
            }
            Command::Quit => return Err(Exit::Quit),
        }
        Ok(())
    }

    /// Sends a request; prints the error of a failed one and gives `None` for it.
    async fn ok<T: DeserializeOwned>(&mut self, req: &Request) -> Result<Option<T>, Exit> {
        match self.call::<T>(req).await? {
            Ok(body) => Ok(Some(body)),
            Err(e) => {
                report(&self.out, &e);
                Ok(None)
            }
        }
    }

    /// Every member of a group, page by page; `None` after an error it reported.
    async fn all_members(&mut self, group: GroupId) -> Result<Option<Vec<Member>>, Exit> {
        let mut members: Vec<Member> = Vec::new();
        loop {
            let page = Page {
                after: members.last().map(|m| m.id),
                limit: Some(Page::MAX),
            };
            let req = Request::GroupMembers(request::GroupMembers { group, page });
            let Some(reply) = self.ok::<MembersReply>(&req).await? else {
                return Ok(None);
            };
            members.extend(reply.members);
            if !reply.more {
                return Ok(Some(members));
            }
        }
    }

    /// Every friend, page by page; `None` after an error it reported.
    async fn all_friends(&mut self) -> Result<Option<Vec<Friend>>, Exit> {
        let mut friends: Vec<Friend> = Vec::new();
        loop {
            let page = Page {
                after: friends.last().map(|f| f.id),
                limit: Some(Page::MAX),
            };
            let Some(reply) = self.ok::<FriendsReply>(&Request::Friends(page)).await? else {
                return Ok(None);
            };
            friends.extend(reply.friends);
            if !reply.more {
                return Ok(Some(friends));
            }
        }
    }

    async fn history(&mut self, target: Target, before: Option<MsgId>) -> Result<(), Exit> {
        let (with, group, title, again) = match target {
            Target::User(id) => (
                Some(id),
                None,
                format!("history with {}", self.user_label(id)),
                format!("history:{id}"),
            ),
            Target::Group(id) => (
                None,
                Some(id),
                format!("history of {}", self.group_label(id)),
                format!("history:g:{id}"),
            ),
        };
        let req = Request::History(request::History {
            with,
            group,
            conv: None,
            before,
            limit: Some(HISTORY_PAGE),
        });
        let Some(reply) = self.ok::<HistoryReply>(&req).await? else {
            return Ok(());
        };
        for m in &reply.messages {
            self.learn(m.from, &m.from_name);
        }
        let title = match target {
            // The messages may have taught the other user's name.
            Target::User(id) => format!("history with {}", self.user_label(id)),
            Target::Group(_) => title,
        };
        let mut lines = vec![format!("{title}: {} message(s)", reply.messages.len())];
        lines.extend(reply.messages.iter().map(format::history_entry));
        if reply.messages.len() as i64 >= HISTORY_PAGE {
            if let Some(oldest) = reply.messages.first() {
                lines.push(format!("  (older: {again}:{})", oldest.id));
            }
        }
        self.out.lines(lines);
        Ok(())
    }

    fn show_me(&self) {
        if let Some(me) = &self.me {
            self.out
                .lines(format::overview(&me.user, &me.friends, &me.groups));
        }
    }

    /// Shows an event (and any that arrived with it), then acks the messages shown.
    /// At the end of the event stream after login, the session is resumed.
    async fn on_event(&mut self, event: Option<Event>) -> Result<(), Exit> {
        let Some(event) = event else {
            if let Some(conn) = &mut self.conn {
                conn.open = false;
            }
            if self.me.is_some() {
                return self.resume().await;
            }
            return Ok(());
        };
        self.show(event);
        while let Some(event) = self.conn.as_mut().and_then(|c| c.events.try_next()) {
            self.show(event);
        }
        self.send_ack();
        Ok(())
    }

    fn show(&mut self, event: Event) {
        match event {
            Event::Msg(msg) => {
                self.learn(msg.from, &msg.from_name);
                self.out.line(format::incoming(&msg));
                self.shown = self.shown.max(msg.id);
                let read = self.to_read.entry(msg.conv).or_insert(0);
                *read = (*read).max(msg.seq);
                if let Some(count) = &mut self.replayed {
                    *count += 1;
                }
            }
            Event::Presence { user, online } => {
                let label = self.user_label(user);
                if let Some(me) = &mut self.me {
                    for f in me.friends.iter_mut().filter(|f| f.id == user) {
                        f.online = online;
                    }
                    let members = me.groups.iter_mut().flat_map(|g| g.members.iter_mut());
                    for m in members.filter(|m| m.id == user) {
                        m.online = online;
                    }
                }
                let state = if online { "online" } else { "offline" };
                self.out.line(format!("[presence] {label} is {state}"));
            }
            Event::FriendAdded { friend } => {
                self.out.line(format!(
                    "[friend] {} is now your friend ({})",
                    who(&friend.name, friend.id),
                    if friend.online { "online" } else { "offline" }
                ));
                self.upsert_friend(friend);
            }
            Event::FriendRemoved { user } => {
                let label = self.user_label(user);
                self.out
                    .line(format!("[friend] {label} removed you from their friends"));
                if let Some(me) = &mut self.me {
                    me.friends.retain(|f| f.id != user);
                }
            }
            Event::GroupDeleted { group } => {
                let title = self.group_label(group);
                self.out.line(format!(
                    "[group {group}] {title} was deleted by its creator"
                ));
                self.forget_group(group);
            }
            Event::Broadcast {
                from,
                from_name,
                text,
                ts,
            } => {
                self.out.line(format!(
                    "[broadcast] {} {}: {}",
                    format::clock(ts),
                    who(&from_name, from),
                    clean(&text)
                ));
            }
            Event::Read { conv, user, seq } => {
                let label = self.user_label(user);
                self.out.line(format!(
                    "[read] {label} read conversation {conv} up to #{seq}"
                ));
            }
            Event::Typing { user, group, .. } => {
                let label = self.user_label(user);
                let place = match group {
                    Some(group) => format!(" in {}", self.group_label(group)),
                    None => String::new(),
                };
                self.out.line(format!("[typing] {label} is typing{place}"));
            }
            Event::FriendRequest { .. }
            | Event::GroupInvite(_)
            | Event::MemberJoined { .. }
            | Event::MemberLeft { .. } => self.consent_event(event),
            Event::RemovedFromGroup { group } => {
                let title = self.group_label(group);
                self.out
                    .line(format!("[group {group}] {title}: its creator removed you"));
                self.forget_group(group);
            }
            Event::Kicked { reason, message } => {
                // Before login this is the login timeout: the next request reconnects.
                if self.me.is_some() {
                    self.kicked = Some(reason.clone());
                    let why = match reason.as_str() {
                        chat_proto::event::kick_reason::LOGGED_IN_ELSEWHERE => {
                            ": this user logged in on another connection".to_string()
                        }
                        chat_proto::event::kick_reason::SHUTDOWN => {
                            ": the server is shutting down".to_string()
                        }
                        _ => message
                            .map(|m| format!(": {}", clean(&m)))
                            .unwrap_or_default(),
                    };
                    self.out.line(format!("[kicked] {}{why}", clean(&reason)));
                }
            }
            Event::Synced => {
                let count = self.replayed.take().unwrap_or(0);
                self.out
                    .line(format!("[synced] {count} offline message(s) delivered"));
            }
        }
    }

    /// Acks every message shown so far and marks it read (what the terminal shows is
    /// read: the sender gets a read receipt), without waiting for the replies.
    fn send_ack(&mut self) {
        if self.shown <= self.acked || self.me.is_none() {
            return;
        }
        let Some(conn) = self.conn.as_ref().filter(|c| c.open) else {
            return;
        };
        self.acked = self.shown;
        let (client, out, id) = (conn.client.clone(), self.out.clone(), self.shown);
        let reads: Vec<(i64, i64)> = self.to_read.drain().filter(|(c, _)| *c != 0).collect();
        self.spawn(async move {
            if let Err(e @ ClientError::Server(_)) = client.ack(id).await {
                report(&out, &e);
            }
            for (conv, seq) in reads {
                if let Err(e @ ClientError::Server(_)) = client.read(conv, seq).await {
                    report(&out, &e);
                }
            }
        });
    }

    /// Pings a logged-in session so that the server does not close it as idle.
    fn heartbeat(&mut self) {
        if self.me.is_none() {
            return;
        }
        let Some(conn) = self.conn.as_ref().filter(|c| c.open) else {
            return;
        };
        let (client, out) = (conn.client.clone(), self.out.clone());
        self.spawn(async move {
            if let Err(e @ ClientError::Server(_)) = client.call_ok(&Request::Ping).await {
                report(&out, &e);
            }
        });
    }

    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(tokio::spawn(task));
    }

    /// Lets the last acks reach the server, then releases the terminal.
    async fn finish(&mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(FINISH_TIMEOUT, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
        self.input.finish(&self.out).await;
        if let Some(conn) = self.conn.take() {
            conn.client.close().await;
        }
    }

    fn upsert_friend(&mut self, friend: Friend) {
        self.learn(friend.id, &friend.name);
        if let Some(me) = &mut self.me {
            me.friends.retain(|f| f.id != friend.id);
            me.friends.push(friend);
        }
    }

    fn forget_group(&mut self, group: GroupId) {
        if let Some(me) = &mut self.me {
            me.groups.retain(|g| g.id != group);
        }
    }

    fn group_mut(&mut self, group: GroupId) -> Option<&mut GroupInfo> {
        self.me.as_mut()?.groups.iter_mut().find(|g| g.id == group)
    }

    fn learn(&mut self, id: UserId, name: &str) {
        if self.names.get(&id).map(String::as_str) != Some(name) {
            self.names.insert(id, name.to_string());
        }
    }

    fn learn_friends(&mut self, friends: &[Friend]) {
        for f in friends {
            self.learn(f.id, &f.name);
        }
    }

    fn learn_members(&mut self, members: &[Member]) {
        for m in members {
            self.learn(m.id, &m.name);
        }
    }

    fn learn_groups(&mut self, groups: &[GroupInfo]) {
        for g in groups {
            self.learn_members(&g.members);
        }
    }

    /// `bob(2)` when the user's name is known, else `user 2`.
    fn user_label(&self, id: UserId) -> String {
        match self.names.get(&id) {
            Some(name) => who(name, id),
            None => format!("user {id}"),
        }
    }

    /// `group 3 "rust"` when the group is known, else `group 3`.
    fn group_label(&self, id: GroupId) -> String {
        let name = self
            .me
            .as_ref()
            .and_then(|me| me.groups.iter().find(|g| g.id == id))
            .map(|g| g.name.as_str());
        format::group_title(id, name)
    }
}

fn who_of(user: &User) -> String {
    who(&user.name, user.id)
}

/// A number is an id; anything else a name.
fn login_as(text: &str) -> LoginAs {
    let text = text.trim();
    match text.parse() {
        Ok(id) => LoginAs::Id(id),
        Err(_) => LoginAs::Name(text.to_string()),
    }
}

/// A fresh client message id for a send: a retry with the same one cannot be stored twice.
fn new_cmid() -> String {
    use rand::Rng;
    let bits: u128 = rand::thread_rng().gen();
    format!("{bits:032x}")
}
