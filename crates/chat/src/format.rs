//! How things look on screen. Every line has a stable shape so that scripts can grep it:
//! `[msg] 12:03:04 alice(1): hello`, `[group 3] 12:03:04 alice(1): hi`,
//! `ok: message 17 sent to bob(2)`, `error: not_found: no such user`.
//!
//! Text from other users is shown with control characters and invisible format
//! characters escaped, so that a message cannot move the cursor, clear the screen, reorder
//! itself or fake a line of its own.

use chat_proto::types::{Friend, GroupInfo, Member, Msg, User};
use chat_proto::UserId;
use chrono::{Local, TimeZone};

/// `text` with control characters (newlines, escapes) written as `\n`, `\u{1b}`, ...
pub(crate) fn clean(text: &str) -> String {
    if !text.chars().any(unsafe_to_show) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_to_show(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Control characters (ESC sequences, carriage returns) and the invisible format
/// characters that reorder or hide text (bidi overrides and isolates, zero-width
/// characters): a line with them could look like another sender's, or the system's.
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `name(id)`.
pub(crate) fn who(name: &str, id: UserId) -> String {
    format!("{}({id})", clean(name))
}

/// Local time of day, `HH:MM:SS`, of a time in ms since the epoch.
pub(crate) fn clock(ts_ms: i64) -> String {
    match Local.timestamp_millis_opt(ts_ms).single() {
        Some(t) => t.format("%H:%M:%S").to_string(),
        None => "??:??:??".to_string(),
    }
}

/// Local date and time, `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn stamp(ts_ms: i64) -> String {
    match Local.timestamp_millis_opt(ts_ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "????-??-?? ??:??:??".to_string(),
    }
}

/// A message as it arrives: `[msg] 12:03:04 alice(1): hello` or
/// `[group 3] 12:03:04 alice(1): hi`.
pub(crate) fn incoming(msg: &Msg) -> String {
    let tag = match msg.group {
        Some(group) => format!("[group {group}]"),
        None => "[msg]".to_string(),
    };
    format!(
        "{tag} {} {}: {}",
        clock(msg.ts),
        who(&msg.from_name, msg.from),
        clean(&msg.text)
    )
}

/// A message in a history listing: `  #17 2024-05-01 12:03:04 alice(1): hello`.
pub(crate) fn history_entry(msg: &Msg) -> String {
    format!(
        "  #{} {} {}: {}",
        msg.id,
        stamp(msg.ts),
        who(&msg.from_name, msg.from),
        clean(&msg.text)
    )
}

fn online(online: bool) -> &'static str {
    if online {
        "online"
    } else {
        "offline"
    }
}

/// `  2 bob online`
pub(crate) fn friend(f: &Friend) -> String {
    format!("  {} {} {}", f.id, clean(&f.name), online(f.online))
}

/// `    1 alice creator online`
pub(crate) fn member(m: &Member, indent: &str) -> String {
    format!(
        "{indent}{} {} {} {}",
        m.id,
        clean(&m.name),
        m.role.as_str(),
        online(m.online)
    )
}

/// `group 3 "rust"` or, when the name is unknown, `group 3`.
pub(crate) fn group_title(id: i64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("group {id} \"{}\"", clean(name)),
        None => format!("group {id}"),
    }
}

/// The classic block shown after login and by `showme`.
pub(crate) fn overview(user: &User, friends: &[Friend], groups: &[GroupInfo]) -> Vec<String> {
    let rule = "=".repeat(54);
    let mut lines = vec![
        rule.clone(),
        format!(
            "current login user => id:{} name:{}",
            user.id,
            clean(&user.name)
        ),
        format!(
            "---------------------- friend list ({}) ----",
            friends.len()
        ),
    ];
    lines.extend(friends.iter().map(friend));
    lines.push(format!(
        "---------------------- group list ({}) -----",
        groups.len()
    ));
    for g in groups {
        let desc = if g.desc.is_empty() {
            String::new()
        } else {
            format!(" ({})", clean(&g.desc))
        };
        lines.push(format!(
            "  {} {}{desc} [{}]",
            g.id,
            clean(&g.name),
            g.role.as_str()
        ));
        lines.extend(g.members.iter().map(|m| member(m, "    ")));
        let more = g.member_count - g.members.len() as i64;
        if more > 0 {
            lines.push(format!("    ... and {more} more (list:{})", g.id));
        }
    }
    lines.push(rule);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::types::Role;

    fn msg(group: Option<i64>, text: &str) -> Msg {
        Msg {
            id: 17,
            ts: 1_700_000_000_000,
            from: 1,
            from_name: "alice".into(),
            text: text.into(),
            to: group.is_none().then_some(2),
            group,
            conv: 9,
            seq: 1,
        }
    }

    #[test]
    fn formats_incoming_messages() {
        let line = incoming(&msg(None, "hello"));
        assert!(line.starts_with("[msg] "), "{line}");
        assert!(line.ends_with(" alice(1): hello"), "{line}");
        let line = incoming(&msg(Some(3), "hi"));
        assert!(line.starts_with("[group 3] "), "{line}");
        assert!(line.ends_with(" alice(1): hi"), "{line}");
        assert_eq!(clock(1_700_000_000_000).len(), 8);
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(clean("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        let line = incoming(&msg(None, "x\ny"));
        assert!(!line.contains('\n'));
        // A right-to-left override would show "evil" reversed, hiding what follows.
        assert_eq!(clean("a\u{202E}live"), "a\\u{202e}live");
        assert_eq!(clean("ali\u{200B}ce"), "ali\\u{200b}ce");
        assert_eq!(clean("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn draws_the_overview() {
        let user = User {
            id: 1,
            name: "alice".into(),
        };
        let friends = [Friend {
            id: 2,
            name: "bob".into(),
            online: true,
        }];
        let groups = [GroupInfo {
            id: 3,
            name: "rust".into(),
            desc: "crabs".into(),
            role: Role::Creator,
            open: false,
            shared_history: false,
            member_count: 1,
            members: vec![Member {
                id: 1,
                name: "alice".into(),
                role: Role::Creator,
                online: true,
            }],
        }];
        let lines = overview(&user, &friends, &groups);
        assert!(lines.contains(&"current login user => id:1 name:alice".to_string()));
        assert!(lines.contains(&"  2 bob online".to_string()));
        assert!(lines.contains(&"  3 rust (crabs) [creator]".to_string()));
        assert!(lines.contains(&"    1 alice creator online".to_string()));
    }
}
