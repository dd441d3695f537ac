//! The commands a logged-in user types, in the classic `name:arg:arg` form of the muduo
//! chat clients, parsed into [`Command`] without touching the network.

use chat_proto::{GroupId, MsgId, UserId};

/// A conversation whose history can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    User(UserId),
    Group(GroupId),
}

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `chat:ID:TEXT`
    Chat { to: UserId, text: String },
    /// `groupchat:GROUP:TEXT`
    GroupChat { group: GroupId, text: String },
    /// `addfriend:ID`
    AddFriend(UserId),
    /// `removefriend:ID`
    RemoveFriend(UserId),
    /// `creategroup:NAME:DESC` (the description may be left out); `opengroup:NAME:DESC`
    /// makes one anyone may join.
    CreateGroup {
        name: String,
        desc: String,
        open: bool,
    },
    /// `invite:GROUP:ID`: invite user ID into a group.
    Invite { group: GroupId, id: UserId },
    /// `invites`: my invitations.
    Invites,
    /// `declineinvite:GROUP`
    DeclineInvite(GroupId),
    /// `requests`: friend requests to me and from me.
    Requests,
    /// `decline:ID`: decline user ID's friend request.
    Decline(UserId),
    /// `block:ID`
    Block(UserId),
    /// `unblock:ID`
    Unblock(UserId),
    /// `blocked`: whom I block.
    Blocked,
    /// `joingroup:GROUP`
    JoinGroup(GroupId),
    /// `quitgroup:GROUP`
    QuitGroup(GroupId),
    /// `deletegroup:GROUP`
    DeleteGroup(GroupId),
    /// `list:GROUP`: the group's members.
    List(GroupId),
    /// `history:ID[:BEFORE]` or `history:g:GROUP[:BEFORE]`
    History {
        target: Target,
        before: Option<MsgId>,
    },
    /// `showme`: who am I, my friends and groups, as known locally.
    ShowMe,
    /// `updatelist`: fetch friends and groups from the server again.
    UpdateList,
    /// `users`: who is online.
    Users,
    /// `conversations`: the conversation list with unread counts.
    Conversations,
    /// `kick:ID[:REASON]` (admins)
    Kick { id: UserId, reason: Option<String> },
    /// `mute:ID:SECONDS` (admins)
    Mute { id: UserId, seconds: i64 },
    /// `unmute:ID` (admins)
    Unmute(UserId),
    /// `broadcast:TEXT` (admins)
    Broadcast(String),
    /// `groupkick:GROUP:ID` (a group's creator)
    GroupKick { group: GroupId, id: UserId },
    /// `shutdown` (admins)
    Shutdown,
    /// `help`
    Help,
    /// `logout`: back to the login menu, connection kept.
    Logout,
    /// `quit`
    Quit,
}

/// Every command with its usage, for `help` and for completion.
pub(crate) const USAGE: &[(&str, &str)] = &[
    ("chat:ID:TEXT", "send TEXT to user ID"),
    ("groupchat:GROUP:TEXT", "send TEXT to group GROUP"),
    (
        "addfriend:ID",
        "ask user ID to be your friend, or accept their request",
    ),
    ("decline:ID", "decline user ID's friend request"),
    ("requests", "friend requests to you and from you"),
    (
        "removefriend:ID",
        "remove user ID from your friends (or withdraw your request)",
    ),
    ("block:ID", "refuse user ID's messages and requests"),
    ("unblock:ID", "stop blocking user ID"),
    ("blocked", "whom you block"),
    (
        "creategroup:NAME:DESC",
        "create a group joined by invitation (DESC optional)",
    ),
    ("opengroup:NAME:DESC", "create a group anyone may join"),
    ("invite:GROUP:ID", "invite user ID into group GROUP"),
    ("invites", "your invitations into groups"),
    (
        "declineinvite:GROUP",
        "decline an invitation into group GROUP",
    ),
    ("joingroup:GROUP", "join group GROUP"),
    ("quitgroup:GROUP", "leave group GROUP"),
    ("deletegroup:GROUP", "delete group GROUP (its creator only)"),
    ("list:GROUP", "list the members of group GROUP"),
    (
        "history:ID[:BEFORE]",
        "messages with user ID, newest last (older than message BEFORE)",
    ),
    ("history:g:GROUP[:BEFORE]", "messages of group GROUP"),
    ("showme", "show who you are, your friends and groups"),
    ("updatelist", "refresh friends and groups from the server"),
    ("users", "list the users online now"),
    (
        "conversations",
        "your conversations, most recent first, with unread counts",
    ),
    (
        "groupkick:GROUP:ID",
        "remove user ID from group GROUP (its creator only)",
    ),
    ("kick:ID[:REASON]", "admin: end user ID's session"),
    (
        "mute:ID:SECONDS",
        "admin: stop user ID from sending for SECONDS",
    ),
    ("unmute:ID", "admin: let user ID send again"),
    ("broadcast:TEXT", "admin: send TEXT to everyone online"),
    ("shutdown", "admin: stop the server"),
    ("help", "show this help"),
    ("logout", "log out, back to the login menu"),
    ("quit", "exit"),
];

/// Parses one line. `Ok(None)` for a blank line; `Err` holds text for the user.
pub(crate) fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let (name, rest) = match line.split_once(':') {
        Some((name, rest)) => (name.trim().to_ascii_lowercase(), Some(rest)),
        None => (line.trim().to_ascii_lowercase(), None),
    };
    let usage = |u: &str| format!("usage: {u}");
    let command = match (name.as_str(), rest) {
        ("chat", Some(rest)) => {
            let (id, text) = rest.split_once(':').ok_or_else(|| usage("chat:ID:TEXT"))?;
            Command::Chat {
                to: number(id, "user id")?,
                text: text_of(text)?,
            }
        }
        ("chat", None) => return Err(usage("chat:ID:TEXT")),
        ("groupchat", Some(rest)) => {
            let (id, text) = rest
                .split_once(':')
                .ok_or_else(|| usage("groupchat:GROUP:TEXT"))?;
            Command::GroupChat {
                group: number(id, "group id")?,
                text: text_of(text)?,
            }
        }
        ("groupchat", None) => return Err(usage("groupchat:GROUP:TEXT")),
        ("addfriend", arg) => Command::AddFriend(one_number(arg, "addfriend:ID", "user id")?),
        ("removefriend", arg) => {
            Command::RemoveFriend(one_number(arg, "removefriend:ID", "user id")?)
        }
        (kind @ ("creategroup" | "opengroup"), Some(rest)) => {
            let (name, desc) = rest.split_once(':').unwrap_or((rest, ""));
            let name = name.trim();
            if name.is_empty() {
                return Err(usage(&format!("{kind}:NAME:DESC")));
            }
            Command::CreateGroup {
                name: name.to_string(),
                desc: desc.trim().to_string(),
                open: kind == "opengroup",
            }
        }
        ("creategroup", None) => return Err(usage("creategroup:NAME:DESC")),
        ("opengroup", None) => return Err(usage("opengroup:NAME:DESC")),
        ("invite", Some(rest)) => {
            let (group, id) = rest
                .split_once(':')
                .ok_or_else(|| usage("invite:GROUP:ID"))?;
            Command::Invite {
                group: number(group, "group id")?,
                id: number(id, "user id")?,
            }
        }
        ("invite", None) => return Err(usage("invite:GROUP:ID")),
        ("invites", None) => Command::Invites,
        ("declineinvite", arg) => {
            Command::DeclineInvite(one_number(arg, "declineinvite:GROUP", "group id")?)
        }
        ("requests", None) => Command::Requests,
        ("decline", arg) => Command::Decline(one_number(arg, "decline:ID", "user id")?),
        ("block", arg) => Command::Block(one_number(arg, "block:ID", "user id")?),
        ("unblock", arg) => Command::Unblock(one_number(arg, "unblock:ID", "user id")?),
        ("blocked", None) => Command::Blocked,
        ("joingroup", arg) => Command::JoinGroup(one_number(arg, "joingroup:GROUP", "group id")?),
        ("quitgroup", arg) => Command::QuitGroup(one_number(arg, "quitgroup:GROUP", "group id")?),
        ("deletegroup", arg) => {
            Command::DeleteGroup(one_number(arg, "deletegroup:GROUP", "group id")?)
        }
        ("list", arg) => Command::List(one_number(arg, "list:GROUP", "group id")?),
        ("history", Some(rest)) => history(rest)?,
        ("history", None) => return Err(usage("history:ID or history:g:GROUP")),
        ("kick", Some(rest)) => {
            let (id, reason) = match rest.split_once(':') {
                Some((id, reason)) => (id, Some(reason.to_string())),
                None => (rest, None),
            };
            Command::Kick {
                id: number(id, "user id")?,
                reason: reason.filter(|r| !r.trim().is_empty()),
            }
        }
        ("kick", None) => return Err(usage("kick:ID[:REASON]")),
        ("mute", Some(rest)) => {
            let (id, secs) = rest
                .split_once(':')
                .ok_or_else(|| usage("mute:ID:SECONDS"))?;
            Command::Mute {
                id: number(id, "user id")?,
                seconds: number(secs, "seconds")?,
            }
        }
        ("mute", None) => return Err(usage("mute:ID:SECONDS")),
        ("unmute", arg) => Command::Unmute(one_number(arg, "unmute:ID", "user id")?),
        ("broadcast", Some(text)) => Command::Broadcast(text_of(text)?),
        ("broadcast", None) => return Err(usage("broadcast:TEXT")),
        ("groupkick", Some(rest)) => {
            let (group, id) = rest
                .split_once(':')
                .ok_or_else(|| usage("groupkick:GROUP:ID"))?;
            Command::GroupKick {
                group: number(group, "group id")?,
                id: number(id, "user id")?,
            }
        }
        ("groupkick", None) => return Err(usage("groupkick:GROUP:ID")),
        ("shutdown", None) => Command::Shutdown,
        ("showme", None) => Command::ShowMe,
        ("updatelist", None) => Command::UpdateList,
        ("users", None) => Command::Users,
        ("conversations" | "convs", None) => Command::Conversations,
        ("help", _) => Command::Help,
        // `loginout` is the classic clients' spelling.
        ("logout" | "loginout", None) => Command::Logout,
        ("quit" | "exit", None) => Command::Quit,
        (
            "showme" | "updatelist" | "users" | "conversations" | "convs" | "logout" | "loginout"
            | "quit" | "exit" | "shutdown" | "invites" | "requests" | "blocked",
            Some(_),
        ) => {
            return Err(format!("{name} takes no argument"));
        }
        _ => {
            let shown: String = name.chars().take(40).collect();
            return Err(format!("unknown command \"{shown}\" (type help)"));
        }
    };
    Ok(Some(command))
}

fn history(rest: &str) -> Result<Command, String> {
    let usage = || "usage: history:ID[:BEFORE] or history:g:GROUP[:BEFORE]".to_string();
    let parts: Vec<&str> = rest.split(':').collect();
    let (target, before) = match parts.as_slice() {
        [g, group] if g.trim() == "g" => (Target::Group(number(group, "group id")?), None),
        [g, group, before] if g.trim() == "g" => (
            Target::Group(number(group, "group id")?),
            Some(number(before, "message id")?),
        ),
        [id] => (Target::User(number(id, "user id")?), None),
        [id, before] => (
            Target::User(number(id, "user id")?),
            Some(number(before, "message id")?),
        ),
        _ => return Err(usage()),
    };
    Ok(Command::History { target, before })
}

fn one_number(arg: Option<&str>, usage: &str, what: &str) -> Result<i64, String> {
    match arg {
        Some(arg) if !arg.contains(':') => number(arg, what),
        _ => Err(format!("usage: {usage}")),
    }
}

fn number(text: &str, what: &str) -> Result<i64, String> {
    let text = text.trim();
    text.parse()
        .map_err(|_| format!("{what} must be a number, not \"{text}\""))
}

fn text_of(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("the message is empty".to_string())
    } else {
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        match parse(line) {
            Ok(Some(cmd)) => cmd,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse(line) {
            Err(e) => e,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_messages_keeping_colons_in_the_text() {
        assert_eq!(
            ok("chat:2:hi: there"),
            Command::Chat {
                to: 2,
                text: "hi: there".into()
            }
        );
        assert_eq!(
            ok("groupchat: 7 :a"),
            Command::GroupChat {
                group: 7,
                text: "a".into()
            }
        );
        assert!(err("chat:x:hi").contains("must be a number"));
        assert!(err("chat:2").starts_with("usage"));
        assert!(err("chat:2: ").contains("empty"));
    }

    #[test]
    fn parses_friend_and_group_commands() {
        assert_eq!(ok("addfriend:3"), Command::AddFriend(3));
        assert_eq!(ok("REMOVEFRIEND:3\r"), Command::RemoveFriend(3));
        assert_eq!(
            ok("creategroup:rust:all about: rust"),
            Command::CreateGroup {
                name: "rust".into(),
                desc: "all about: rust".into(),
                open: false,
            }
        );
        assert_eq!(
            ok("opengroup:solo"),
            Command::CreateGroup {
                name: "solo".into(),
                desc: String::new(),
                open: true,
            }
        );
        assert_eq!(ok("invite:2:3"), Command::Invite { group: 2, id: 3 });
        assert_eq!(ok("decline:3"), Command::Decline(3));
        assert_eq!(ok("block:3"), Command::Block(3));
        assert_eq!(ok("blocked"), Command::Blocked);
        assert_eq!(ok("joingroup:1"), Command::JoinGroup(1));
        assert_eq!(ok("quitgroup:1"), Command::QuitGroup(1));
        assert_eq!(ok("deletegroup:1"), Command::DeleteGroup(1));
        assert_eq!(ok("list:1"), Command::List(1));
        assert!(err("addfriend").starts_with("usage"));
        assert!(err("addfriend:1:2").starts_with("usage"));
    }

    #[test]
    fn parses_admin_commands() {
        assert!(matches!(
            ok("kick:5"),
            Command::Kick {
                id: 5,
                reason: None
            }
        ));
        match ok("kick:5:spam: and more") {
            Command::Kick { id: 5, reason } => {
                assert_eq!(reason.as_deref(), Some("spam: and more"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ok("mute:5:60"),
            Command::Mute { id: 5, seconds: 60 }
        ));
        assert!(matches!(ok("unmute:5"), Command::Unmute(5)));
        assert!(matches!(
            ok("groupkick:3:5"),
            Command::GroupKick { group: 3, id: 5 }
        ));
        assert!(matches!(ok("shutdown"), Command::Shutdown));
        match ok("broadcast:hello: all") {
            Command::Broadcast(text) => assert_eq!(text, "hello: all"),
            other => panic!("{other:?}"),
        }
        assert!(err("mute:5").starts_with("usage"));
        assert!(err("groupkick:3").starts_with("usage"));
    }

    #[test]
    fn parses_history_forms() {
        assert_eq!(
            ok("history:4"),
            Command::History {
                target: Target::User(4),
                before: None
            }
        );
        assert_eq!(
            ok("history:g:5:99"),
            Command::History {
                target: Target::Group(5),
                before: Some(99)
            }
        );
        assert!(parse("history:g").is_err());
        assert!(parse("history:1:2:3").is_err());
    }

    #[test]
    fn parses_plain_words_and_refuses_the_rest() {
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(ok(" showme "), Command::ShowMe);
        assert_eq!(ok("updatelist"), Command::UpdateList);
        assert_eq!(ok("users"), Command::Users);
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("loginout"), Command::Logout);
        assert_eq!(ok("quit"), Command::Quit);
        assert!(err("dance").contains("unknown command"));
        assert!(parse("quit:now").is_err());
    }
}
