// The chat app: the session (login, token, replay), conversations and their messages,
// live state (presence, typing, read marks), and the page's controls. Rendering lives in
// views.js, the friends/groups/admin dialogs in manage.js, the socket in connection.js.

import { Connection, ProtocolError, describeError } from "./connection.js";
import { $, notify, renderConvList, renderConversation, renderState } from "./views.js";
import { setupDialogs, openManage, openMembers, openAdmin, refreshOpenDialogs } from "./manage.js";

const TOKEN_KEY = "chatd.token";
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
const HISTORY_PAGE = 50;
const ACK_DELAY_MS = 1000;

class App {
  constructor() {
    this.me = null;
    this.admin = false;
    this.friends = new Map();
    this.groups = new Map();
    this.convs = new Map();
    this.current = null;
    this.signup = null;
    this.password = null;
    this.synced = false;
    this.highestId = 0;
    this.ackedId = 0;
    this.ackTimer = null;
    this.lastTypingSent = 0;
    this.conn = new Connection({
      onState: (state, detail) => renderState(state, detail),
      onEvent: (frame) => this.event(frame),
      onOpen: () => this.login(),
    });
  }

  // --- session -------------------------------------------------------------------

  boot() {
    if (localStorage.getItem(TOKEN_KEY)) {
      this.showChat(true);
      this.conn.start();
    } else {
      this.showChat(false);
    }
  }

  showChat(on) {
    $("auth-view").hidden = on;
    $("chat-view").hidden = !on;
    $("account").hidden = !on;
    if (!on) $("auth-name").focus();
  }

  /// Logs in on a fresh socket: registers first when asked to, then by password once,
  /// by token on every reconnection.
  async login() {
    const token = localStorage.getItem(TOKEN_KEY);
    let reply;
    try {
      if (this.signup) {
        await this.conn.request("register", this.signup);
        this.password = this.signup;
        this.signup = null;
      }
      if (this.password) reply = await this.conn.request("login", this.password);
      else if (token) reply = await this.conn.request("login", { token });
      else throw new ProtocolError("auth_failed");
    } catch (err) {
      if (err.code === "disconnected" || err.code === "timeout") throw err;
      const usedToken = !this.password && !this.signup;
      this.signup = null;
      this.password = null;
      this.conn.stop();
      if (usedToken) localStorage.removeItem(TOKEN_KEY);
      this.showChat(false);
      $("auth-error").textContent = usedToken
        ? "Your session has ended; please log in again."
        : describeError(err);
      throw err;
    }
    this.password = null;
    localStorage.setItem(TOKEN_KEY, reply.token);
    this.synced = false;
    this.me = reply.user;
    this.admin = reply.admin === true;
    $("me").textContent = `${reply.user.name} (id ${reply.user.id})`;
    $("me").dataset.id = String(reply.user.id);
    $("admin-btn").hidden = !this.admin;
    $("auth-error").textContent = "";
    this.showChat(true);
    this.friends = new Map((reply.friends || []).map((f) => [f.id, f]));
    this.groups = new Map((reply.groups || []).map((g) => [g.id, g]));
    for (const g of this.groups.values()) this.groupConv(g.id, g.name);
    this.loadConversations().catch((err) => notify(`Could not load conversations: ${describeError(err)}`, { error: true }));
    this.render();
  }

  async logout() {
    try {
      if (this.highestId > this.ackedId) await this.conn.request("ack", { id: this.highestId });
      await this.conn.request("logout");
    } catch (err) {
      // Logged out locally anyway; the token is forgotten below.
    }
    localStorage.removeItem(TOKEN_KEY);
    this.conn.stop();
    this.me = null;
    this.convs.clear();
    this.current = null;
    $("messages").replaceChildren();
    this.showChat(false);
  }

  /// The conversations op, page by page (a few pages: the most recent ones).
  async loadConversations() {
    let before;
    for (let page = 0; page < 5; page++) {
      const reply = await this.conn.request("conversations", before === undefined ? { limit: 100 } : { limit: 100, before });
      for (const c of reply.conversations) this.mergeConversation(c);
      if (reply.before === undefined || reply.conversations.length === 0) break;
      before = reply.before;
    }
    this.render();
    this.markRead();
  }

  mergeConversation(c) {
    const conv = c.kind === "group"
      ? this.groupConv(c.group, c.name)
      : this.directConv(c.peer.id, c.peer.name);
    conv.conv = c.conv;
    if (c.last && (!conv.last || c.last.seq >= conv.last.seq)) conv.last = c.last;
    conv.lastSeq = Math.max(conv.lastSeq, c.last_seq);
    conv.read = c.read;
    conv.unread = c.unread;
    if (c.peer_read !== undefined) conv.peerRead = Math.max(conv.peerRead, c.peer_read);
    if (c.peer && !this.friends.has(c.peer.id)) conv.strangerOnline = c.peer.online;
  }

  // --- conversations ----------------------------------------------------------------

  newConv(key, fields) {
    let conv = this.convs.get(key);
    if (!conv) {
      conv = {
        key, conv: null, messages: new Map(), last: null, lastSeq: 0, read: 0, unread: 0,
        peerRead: 0, readBy: 0, complete: false, loaded: false, typing: null, created: Date.now(),
        ...fields,
      };
      this.convs.set(key, conv);
    }
    return conv;
  }

  directConv(peerId, name) {
    const conv = this.newConv(`u${peerId}`, { kind: "direct", peerId, title: name || `user ${peerId}` });
    if (name) conv.title = name;
    return conv;
  }

  groupConv(groupId, name) {
    const conv = this.newConv(`g${groupId}`, { kind: "group", groupId, title: name || `group ${groupId}` });
    if (name) conv.title = name;
    return conv;
  }

  convOfMessage(m) {
    if (m.group !== undefined) return this.groupConv(m.group, this.groups.get(m.group)?.name);
    const peer = m.from === this.me.id ? m.to : m.from;
    const name = m.from === this.me.id ? this.friends.get(peer)?.name : m.from_name;
    return this.directConv(peer, name);
  }

  convById(id) {
    for (const conv of this.convs.values()) if (conv.conv === id) return conv;
    return null;
  }

  isOnline(userId) {
    const friend = this.friends.get(userId);
    if (friend) return friend.online;
    const conv = this.convs.get(`u${userId}`);
    return conv?.strangerOnline === true;
  }

  typingText(conv) {
    return conv.typing && conv.typing.until > Date.now() ? `${conv.typing.name} is typing…` : "";
  }

  sortedMessages(conv) {
    return [...conv.messages.values()].sort((a, b) => {
      if (a.seq && b.seq) return a.seq - b.seq;
      if (a.seq) return -1;
      if (b.seq) return 1;
      return a.ts - b.ts;
    });
  }

  async open(key) {
    const conv = this.convs.get(key);
    if (!conv) return;
    this.current = key;
    this.render({ scroll: "bottom" });
    $("composer-text").focus();
    if (!conv.loaded) {
      conv.loaded = true;
      await this.loadOlder(conv, true);
    }
    this.markRead();
  }

  /// One page of history before the oldest message shown.
  async loadOlder(conv, first = false) {
    if (conv.complete || conv.loadingOlder) return;
    const oldest = this.sortedMessages(conv).find((m) => m.id);
    const fields = conv.kind === "group" ? { group: conv.groupId } : { with: conv.peerId };
    if (oldest && !first) fields.before = oldest.id;
    fields.limit = HISTORY_PAGE;
    conv.loadingOlder = true;
    this.render();
    try {
      const reply = await this.conn.request("history", fields);
      for (const m of reply.messages) this.addMessage(conv, m);
      if (reply.messages.length < HISTORY_PAGE) conv.complete = true;
    } catch (err) {
      notify(`Could not load history: ${describeError(err)}`, { error: true });
      if (first) conv.loaded = false;
    } finally {
      conv.loadingOlder = false;
    }
    if (conv.key === this.current) renderConversation(this, { scroll: first ? "bottom" : "older" });
  }

  addMessage(conv, m) {
    if (m.id !== undefined && conv.messages.has(m.id)) return false;
    conv.messages.set(m.id, m);
    if (m.conv !== undefined) conv.conv = m.conv;
    if (!conv.last || (m.seq ?? 0) >= (conv.last.seq ?? 0)) conv.last = m;
    return true;
  }

  /// Moves the read cursor of the open conversation when the user can see it.
  markRead() {
    const conv = this.convs.get(this.current);
    if (!conv || conv.conv === null || document.hidden || !this.conn.ready) return;
    if (conv.lastSeq <= conv.read && conv.unread === 0) return;
    const seq = conv.lastSeq;
    conv.unread = 0;
    renderConvList(this);
    this.conn.request("read", { conv: conv.conv, seq })
      .then((reply) => { conv.read = Math.max(conv.read, reply.read); })
      .catch((err) => notify(`Could not mark as read: ${describeError(err)}`, { error: true }));
  }

  // --- sending ------------------------------------------------------------------------

  async send(text) {
    const conv = this.convs.get(this.current);
    if (!conv || !text.trim()) return;
    const cmid = newCmid();
    const m = { cmid, from: this.me.id, from_name: this.me.name, text, ts: Date.now() };
    conv.messages.set(`c:${cmid}`, m);
    conv.last = m;
    this.render({ scroll: "bottom" });
    await this.deliver(conv, m);
  }

  async deliver(conv, m) {
    const op = conv.kind === "group" ? "group_send" : "send";
    const target = conv.kind === "group" ? { group: conv.groupId } : { to: conv.peerId };
    m.failed = null;
    m.waiting = false;
    try {
      const reply = await this.conn.request(op, { ...target, text: m.text, cmid: m.cmid });
      conv.messages.delete(`c:${m.cmid}`);
      Object.assign(m, { id: reply.msg.id, ts: reply.msg.ts, seq: reply.msg.seq, conv: reply.msg.conv });
      this.addMessage(conv, m);
      conv.lastSeq = Math.max(conv.lastSeq, m.seq ?? 0);
      conv.read = Math.max(conv.read, m.seq ?? 0);
    } catch (err) {
      if (err.code === "disconnected" || err.code === "timeout") {
        // Sent again with the same cmid after the next login: never twice.
        m.waiting = true;
      } else {
        m.failed = describeError(err);
        notify(`Message not sent: ${m.failed}`, { error: true });
      }
    }
    this.render();
  }

  resend(conv, m) {
    this.deliver(conv, m);
  }

  resendWaiting() {
    for (const conv of this.convs.values()) {
      for (const m of conv.messages.values()) if (m.waiting && !m.seq) this.deliver(conv, m);
    }
  }

  typed() {
    const conv = this.convs.get(this.current);
    const now = Date.now();
    if (!conv || conv.conv === null || now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    this.lastTypingSent = now;
    this.conn.request("typing", { conv: conv.conv }).catch((err) => {
      // Typing is a hint: a refusal is worth a console line, not the user's attention.
      console.info("chatd: typing refused", describeError(err));
    });
  }

  // --- events -------------------------------------------------------------------------

  event(frame) {
    switch (frame.event) {
      case "msg": return this.onMsg(frame);
      case "synced":
        this.synced = true;
        this.scheduleAck(0);
        this.resendWaiting();
        return this.render();
      case "presence": {
        const friend = this.friends.get(frame.user);
        if (friend) friend.online = frame.online;
        return this.render();
      }
      case "typing": {
        const conv = this.convById(frame.conv);
        if (!conv || frame.user === this.me?.id) return;
        conv.typing = { name: frame.name, until: Date.now() + TYPING_SHOW_MS };
        setTimeout(() => this.render(), TYPING_SHOW_MS + 50);
        return this.render();
      }
      case "read": {
        const conv = this.convById(frame.conv);
        if (!conv || frame.user === this.me?.id) return;
        if (conv.kind === "direct") conv.peerRead = Math.max(conv.peerRead, frame.seq);
        else conv.readBy = Math.max(conv.readBy, frame.seq);
        return this.render();
      }
      case "friend_request":
        notify(`${frame.from.name} (id ${frame.from.id}) wants to be your friend: see Friends & groups.`);
        return refreshOpenDialogs(this);
      case "friend_added":
        this.friends.set(frame.friend.id, frame.friend);
        this.directConv(frame.friend.id, frame.friend.name);
        notify(`${frame.friend.name} is now your friend.`);
        refreshOpenDialogs(this);
        return this.render();
      case "friend_removed":
        this.friends.delete(frame.user);
        refreshOpenDialogs(this);
        return this.render();
      case "group_invite":
        notify(`${frame.by.name} invited you into the group ${frame.name} (id ${frame.group}): see Friends & groups.`);
        return refreshOpenDialogs(this);
      case "member_joined":
        notify(`${frame.user.name} joined ${this.groups.get(frame.group)?.name ?? `group ${frame.group}`}.`);
        return refreshOpenDialogs(this);
      case "member_left":
        return refreshOpenDialogs(this);
      case "removed_from_group":
      case "group_deleted": {
        const name = this.groups.get(frame.group)?.name ?? `group ${frame.group}`;
        notify(frame.event === "group_deleted" ? `The group ${name} was deleted.` : `You were removed from the group ${name}.`);
        return this.dropGroup(frame.group);
      }
      case "broadcast": {
        const banner = $("broadcast");
        banner.textContent = `Announcement from ${frame.from_name}: ${frame.text}`;
        banner.hidden = false;
        return undefined;
      }
      case "kicked": return this.onKicked(frame);
      case "error":
        return notify(describeError(new ProtocolError(frame.error.code, frame.error.message)), { error: true });
      default: return undefined;
    }
  }

  onMsg(m) {
    const conv = this.convOfMessage(m);
    if (!this.addMessage(conv, m)) return;
    this.highestId = Math.max(this.highestId, m.id);
    if (m.seq > conv.lastSeq) {
      conv.lastSeq = m.seq;
      if (m.from !== this.me.id) conv.unread += 1;
    }
    if (conv.typing && m.from_name === conv.typing.name) conv.typing = null;
    if (this.synced) this.scheduleAck(ACK_DELAY_MS);
    this.render();
    if (conv.key === this.current) this.markRead();
  }

  scheduleAck(delay) {
    clearTimeout(this.ackTimer);
    this.ackTimer = setTimeout(() => {
      if (this.highestId <= this.ackedId) return;
      const id = this.highestId;
      this.conn.request("ack", { id })
        .then(() => { this.ackedId = Math.max(this.ackedId, id); })
        .catch(() => {}); // Unacked messages come again at the next login: nothing lost.
    }, delay);
  }

  onKicked(frame) {
    const reasons = {
      logged_in_elsewhere: "You logged in somewhere else, so this page was disconnected.",
      admin: `An admin disconnected you${frame.message ? `: ${frame.message}` : "."}`,
      shutdown: "The server is restarting; reconnecting.",
      idle_timeout: "Disconnected after a quiet spell; reconnecting.",
      slow_consumer: "The connection was too slow; reconnecting.",
    };
    notify(reasons[frame.reason] || `Disconnected (${frame.reason}).`, { error: true });
    if (frame.reason === "logged_in_elsewhere" || frame.reason === "admin") {
      // Do not fight the other session: reconnect only when the user asks.
      this.conn.stopped = true;
      setTimeout(() => {
        renderState("stopped");
        $("retry-btn").hidden = false;
      }, 0);
    }
  }

  dropGroup(groupId) {
    this.groups.delete(groupId);
    this.convs.delete(`g${groupId}`);
    if (this.current === `g${groupId}`) this.current = null;
    refreshOpenDialogs(this);
    this.render();
  }

  render(options) {
    if (!this.me) return;
    renderConvList(this);
    renderConversation(this, options);
  }
}

function newCmid() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// --- wiring ---------------------------------------------------------------------------

const app = new App();
window.chatd = app;

function credentials() {
  const name = $("auth-name").value.trim();
  const password = $("auth-password").value;
  if (!name || !password) {
    $("auth-error").textContent = "Enter a name and a password.";
    return null;
  }
  return { name, password };
}

$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const c = credentials();
  if (!c) return;
  $("auth-error").textContent = "";
  app.password = c;
  app.conn.stop();
  app.conn.start();
});

$("register-btn").addEventListener("click", () => {
  const c = credentials();
  if (!c) return;
  $("auth-error").textContent = "";
  app.signup = c;
  app.conn.stop();
  app.conn.start();
});

$("logout-btn").addEventListener("click", () => app.logout());
$("retry-btn").addEventListener("click", () => {
  if (app.conn.stopped && app.me) app.conn.start();
  else app.conn.retryNow();
});
$("manage-btn").addEventListener("click", () => openManage(app));
$("admin-btn").addEventListener("click", () => openAdmin(app));
$("members-btn").addEventListener("click", () => {
  const conv = app.convs.get(app.current);
  if (conv?.kind === "group") openMembers(app, conv.groupId);
});
$("back-btn").addEventListener("click", () => {
  app.current = null;
  app.render();
  document.querySelector("#conv-list button")?.focus();
});
$("older-btn").addEventListener("click", () => {
  const conv = app.convs.get(app.current);
  if (conv) app.loadOlder(conv);
});
$("scroller").addEventListener("scroll", () => {
  const conv = app.convs.get(app.current);
  if (conv && conv.loaded && $("scroller").scrollTop < 30) app.loadOlder(conv);
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const box = $("composer-text");
  const text = box.value;
  if (!text.trim()) return;
  box.value = "";
  app.send(text);
});
$("composer-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("composer-text").addEventListener("input", () => app.typed());

$("new-chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = Number($("new-chat-id").value);
  if (!Number.isSafeInteger(id) || id <= 0) return notify("Enter a user id (a number).", { error: true });
  if (id === app.me?.id) return notify("That is you: pick someone else.", { error: true });
  $("new-chat-id").value = "";
  app.directConv(id, app.friends.get(id)?.name);
  app.open(`u${id}`);
  return undefined;
});

$("broadcast").addEventListener("click", () => { $("broadcast").hidden = true; });
document.addEventListener("visibilitychange", () => app.markRead());
window.addEventListener("focus", () => app.markRead());

setupDialogs();
app.boot();
