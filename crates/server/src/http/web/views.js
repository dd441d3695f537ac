// Rendering: builds DOM nodes from the app's state. Text from other users only ever
// becomes a text node (`h` turns strings into text nodes; nothing here sets innerHTML),
// so a message cannot inject markup or script.

/// Creates an element: `props` are properties or attributes (`on*` functions become
/// listeners, `dataset` an object), children are nodes or strings (as text).
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "class") {
      node.className = value;
    } else if (key in node && !key.includes("-")) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

const TOAST_MS = 6000;

/// Shows `text` for a while: in the polite region, or the alert region for errors.
export function notify(text, { error = false } = {}) {
  const box = $(error ? "alerts" : "toasts");
  const item = h("p", { class: error ? "toast error" : "toast" }, text);
  box.append(item);
  setTimeout(() => item.remove(), error ? TOAST_MS * 2 : TOAST_MS);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

export function formatTime(ts) {
  const date = new Date(ts);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? timeFormat.format(date)
    : dateFormat.format(date);
}

/// The conversation list, most recent first.
export function renderConvList(app) {
  const list = $("conv-list");
  const convs = [...app.convs.values()].sort(
    (a, b) => (b.last?.ts ?? b.created) - (a.last?.ts ?? a.created),
  );
  $("conv-empty").hidden = convs.length > 0;
  list.replaceChildren(
    ...convs.map((c) => {
      const online = c.kind === "direct" ? app.isOnline(c.peerId) : null;
      const typing = app.typingText(c);
      const preview = typing || (c.last ? `${c.last.from === app.me.id ? "You" : c.last.from_name}: ${c.last.text}` : "No messages yet");
      const label = [
        c.title,
        c.kind === "group" ? "group" : online ? "online" : "offline",
        c.unread ? `${c.unread} unread` : null,
      ].filter(Boolean).join(", ");
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: c.key === app.current ? "conv current" : "conv",
            dataset: { key: c.key },
            "aria-current": c.key === app.current ? "true" : null,
            "aria-label": label,
            onclick: () => app.open(c.key),
          },
          h("span", { class: c.kind === "group" ? "avatar group" : "avatar" }, c.kind === "group" ? "#" : (c.title[0] || "?").toUpperCase()),
          online === null ? null : h("span", { class: online ? "dot on" : "dot", "aria-hidden": "true" }),
          h(
            "span",
            { class: "conv-text" },
            h("span", { class: "conv-name" }, c.title),
            h("span", { class: typing ? "conv-last typing-now" : "conv-last" }, preview),
          ),
          c.unread ? h("span", { class: "badge", "aria-hidden": "true" }, c.unread > 99 ? "99+" : String(c.unread)) : null,
        ),
      );
    }),
  );
}

/// One message as a list item.
export function renderMessage(app, conv, m) {
  const mine = m.from === app.me.id;
  let status = null;
  if (mine) {
    if (m.failed) status = h("span", { class: "status failed" }, `Not sent: ${m.failed} `);
    else if (!m.seq) status = h("span", { class: "status" }, "Sending…");
    else if (conv.kind === "direct" && conv.peerRead >= m.seq) status = h("span", { class: "status read" }, "Seen");
    else if (conv.kind === "group" && conv.readBy >= m.seq) status = h("span", { class: "status read" }, "Read");
    else status = h("span", { class: "status" }, "Sent");
  }
  const retry = mine && m.failed
    ? h("button", { type: "button", class: "link", onclick: () => app.resend(conv, m) }, "Retry")
    : null;
  return h(
    "li",
    { class: mine ? "msg mine" : "msg", dataset: { id: String(m.id ?? ""), seq: String(m.seq ?? "") } },
    h(
      "div",
      { class: "bubble" },
      conv.kind === "group" && !mine ? h("span", { class: "from" }, m.from_name) : null,
      h("p", { class: "text" }, m.text),
      h(
        "span",
        { class: "meta" },
        mine ? h("span", { class: "visually-hidden" }, "You, ") : conv.kind === "direct" ? h("span", { class: "visually-hidden" }, `${m.from_name}, `) : null,
        m.ts ? h("time", { dateTime: new Date(m.ts).toISOString() }, formatTime(m.ts)) : null,
        status ? " · " : null,
        status,
        retry,
      ),
    ),
  );
}

/// The open conversation: header, messages (keeping the scroll position sensible).
export function renderConversation(app, { scroll = "keep" } = {}) {
  const conv = app.convs.get(app.current);
  $("conversation").hidden = !conv;
  $("no-conversation").hidden = !!conv;
  document.body.classList.toggle("in-conv", !!conv);
  if (!conv) return;
  $("conv-title").textContent = conv.title;
  let sub;
  if (conv.kind === "direct") sub = `${app.isOnline(conv.peerId) ? "Online" : "Offline"} · user ${conv.peerId}`;
  else sub = `Group ${conv.groupId}`;
  $("conv-sub").textContent = sub;
  $("conv-sub").classList.toggle("online", conv.kind === "direct" && app.isOnline(conv.peerId));
  $("members-btn").hidden = conv.kind !== "group";
  $("typing").textContent = app.typingText(conv);
  $("older-btn").hidden = conv.complete;
  $("older-btn").disabled = !!conv.loadingOlder;

  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const atBottom = fromBottom - scroller.clientHeight < 40;
  const list = $("messages");
  const messages = app.sortedMessages(conv);
  list.replaceChildren(...messages.map((m) => renderMessage(app, conv, m)));
  if (scroll === "bottom" || (scroll === "keep" && atBottom)) {
    scroller.scrollTop = scroller.scrollHeight;
  } else if (scroll === "older") {
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  }
}

/// The connection state in the header.
export function renderState(state, detail) {
  const words = {
    connecting: "Connecting…",
    online: "Online",
    waiting: `Offline: reconnecting in ${detail} s`,
    stopped: "Not connected",
  };
  const node = $("conn-state");
  node.textContent = words[state] || state;
  node.dataset.state = state;
  $("retry-btn").hidden = state !== "waiting";
}
