// The dialogs: friends (requests, blocks), groups (create, join, invitations), a group's
// members (paged, invite, kick, roles) and the admin tools. Every action reports its
// outcome in words; errors are never swallowed.

import { describeError } from "./connection.js";
import { $, h, notify } from "./views.js";

let membersGroup = null;

export function setupDialogs() {
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
  }
}

/// Runs `op`, says `done` when it worked and the error's words when not.
async function act(app, op, fields, done) {
  try {
    const reply = await app.conn.request(op, fields);
    if (done) notify(typeof done === "function" ? done(reply) : done);
    return reply;
  } catch (err) {
    notify(`${op.replace(/_/g, " ")} failed: ${describeError(err)}`, { error: true });
    return null;
  }
}

function idForm(label, button, onSubmit, extra = []) {
  const id = `f-${label.replace(/\W+/g, "-").toLowerCase()}`;
  const input = h("input", { id, inputmode: "numeric", required: true, pattern: "[0-9]+" });
  const form = h(
    "form",
    {
      class: "inline-form",
      onsubmit: (e) => {
        e.preventDefault();
        const value = Number(input.value);
        if (!Number.isSafeInteger(value) || value <= 0) {
          notify(`${label}: enter a number.`, { error: true });
          return;
        }
        input.value = "";
        onSubmit(value);
      },
    },
    h("label", { htmlFor: id }, label),
    h("div", { class: "row" }, input, ...extra, h("button", { type: "submit" }, button)),
  );
  return form;
}

function userRow(user, ...buttons) {
  return h("li", { class: "row spread" }, h("span", {}, `${user.name} (id ${user.id})`), h("span", { class: "row" }, ...buttons));
}

function button(label, onclick, cls) {
  return h("button", { type: "button", class: cls, onclick }, label);
}

export async function openManage(app) {
  const dialog = $("manage-dialog");
  if (!dialog.open) dialog.showModal();
  await renderManage(app);
}

async function renderManage(app) {
  const body = $("manage-body");
  const [requests, blocked, invites] = await Promise.all([
    act(app, "friend_requests", {}),
    act(app, "blocked", {}),
    act(app, "invites", {}),
  ]);
  const rerender = () => renderManage(app).then(() => app.render());
  const friends = [...app.friends.values()].sort((a, b) => a.name.localeCompare(b.name));
  const groups = [...app.groups.values()].sort((a, b) => a.name.localeCompare(b.name));

  const friendsSection = h(
    "section",
    { "aria-labelledby": "friends-h" },
    h("h3", { id: "friends-h" }, "Friends"),
    idForm("Add a friend by user id", "Ask", async (id) => {
      const reply = await act(app, "add_friend", { id }, (r) => (r.friend ? `You and ${r.friend.name} are friends now.` : `Request sent to user ${id}.`));
      if (reply?.friend) app.friends.set(reply.friend.id, reply.friend);
      rerender();
    }),
    friends.length ? null : h("p", { class: "muted" }, "No friends yet."),
    h("ul", { class: "plain" }, friends.map((f) => userRow(
      { ...f, name: `${f.online ? "● " : "○ "}${f.name}` },
      button("Message", () => { $("manage-dialog").close(); app.directConv(f.id, f.name); app.open(`u${f.id}`); }),
      button("Remove", async () => {
        if (await act(app, "remove_friend", { id: f.id }, `${f.name} is no longer your friend.`)) app.friends.delete(f.id);
        rerender();
      }, "secondary"),
      button("Block", async () => {
        if (await act(app, "block", { id: f.id }, `You block ${f.name}.`)) app.friends.delete(f.id);
        rerender();
      }, "danger"),
    ))),
    h("h4", {}, "Requests to you"),
    requests?.incoming.length ? null : h("p", { class: "muted" }, "None."),
    h("ul", { class: "plain" }, (requests?.incoming ?? []).map((u) => userRow(
      u,
      button("Accept", async () => {
        const reply = await act(app, "add_friend", { id: u.id }, `You and ${u.name} are friends now.`);
        if (reply?.friend) app.friends.set(reply.friend.id, reply.friend);
        rerender();
      }),
      button("Decline", async () => { await act(app, "decline_friend", { id: u.id }, "Request declined."); rerender(); }, "secondary"),
    ))),
    h("h4", {}, "Your requests"),
    requests?.outgoing.length ? null : h("p", { class: "muted" }, "None."),
    h("ul", { class: "plain" }, (requests?.outgoing ?? []).map((u) => userRow(
      u,
      button("Withdraw", async () => { await act(app, "remove_friend", { id: u.id }, "Request withdrawn."); rerender(); }, "secondary"),
    ))),
    h("h4", {}, "Blocked"),
    idForm("Block a user by id", "Block", async (id) => { await act(app, "block", { id }, `You block user ${id}.`); app.friends.delete(id); rerender(); }),
    h("ul", { class: "plain" }, (blocked?.users ?? []).map((u) => userRow(
      u,
      button("Unblock", async () => { await act(app, "unblock", { id: u.id }, `You no longer block ${u.name}.`); rerender(); }, "secondary"),
    ))),
  );

  const nameInput = h("input", { id: "new-group-name", required: true, maxLength: 32 });
  const descInput = h("input", { id: "new-group-desc", maxLength: 200 });
  const openBox = h("input", { id: "new-group-open", type: "checkbox" });
  const sharedBox = h("input", { id: "new-group-shared", type: "checkbox" });
  const createForm = h(
    "form",
    {
      class: "stack",
      onsubmit: async (e) => {
        e.preventDefault();
        const name = nameInput.value.trim();
        if (!name) return notify("A group needs a name.", { error: true });
        const reply = await act(app, "create_group", {
          name, desc: descInput.value, open: openBox.checked, shared_history: sharedBox.checked,
        }, (r) => `Group ${r.group.name} created (id ${r.group.id}).`);
        if (reply) {
          app.groups.set(reply.group.id, reply.group);
          app.groupConv(reply.group.id, reply.group.name);
          await app.loadConversations().catch(() => {});
          rerender();
        }
        return undefined;
      },
    },
    h("label", { htmlFor: "new-group-name" }, "Group name"), nameInput,
    h("label", { htmlFor: "new-group-desc" }, "Description (optional)"), descInput,
    h("label", { class: "check" }, openBox, " Open: anyone may join (otherwise by invitation)"),
    h("label", { class: "check" }, sharedBox, " Newcomers see earlier messages"),
    h("button", { type: "submit" }, "Create group"),
  );

  const join = async (group) => {
    const reply = await act(app, "join_group", { group }, (r) => `You joined ${r.group.name}.`);
    if (reply) {
      app.groups.set(reply.group.id, reply.group);
      app.groupConv(reply.group.id, reply.group.name);
      await app.loadConversations().catch(() => {});
    }
    rerender();
  };

  const groupsSection = h(
    "section",
    { "aria-labelledby": "groups-h" },
    h("h3", { id: "groups-h" }, "Groups"),
    h("ul", { class: "plain" }, groups.map((g) => h(
      "li",
      { class: "row spread" },
      h("span", {}, `${g.name} (id ${g.id}, ${g.role}${g.open ? ", open" : ", closed"})`),
      h(
        "span",
        { class: "row" },
        button("Open", () => { $("manage-dialog").close(); app.open(`g${g.id}`); }),
        button("Members", () => { $("manage-dialog").close(); openMembers(app, g.id); }, "secondary"),
        g.role === "creator"
          ? button("Delete", async () => {
            if (!window.confirm(`Delete the group ${g.name} for everyone?`)) return;
            if (await act(app, "delete_group", { group: g.id }, `Group ${g.name} deleted.`)) app.dropGroup(g.id);
            rerender();
          }, "danger")
          : button("Leave", async () => {
            if (await act(app, "leave_group", { group: g.id }, `You left ${g.name}.`)) app.dropGroup(g.id);
            rerender();
          }, "danger"),
      ),
    ))),
    idForm("Join a group by id", "Join", join),
    h("h4", {}, "Invitations"),
    invites?.invites.length ? null : h("p", { class: "muted" }, "None."),
    h("ul", { class: "plain" }, (invites?.invites ?? []).map((inv) => h(
      "li",
      { class: "row spread" },
      h("span", {}, `${inv.name} (id ${inv.group}), from ${inv.by.name}`),
      h("span", { class: "row" },
        button("Join", () => join(inv.group)),
        button("Decline", async () => { await act(app, "decline_invite", { group: inv.group }, "Invitation declined."); rerender(); }, "secondary")),
    ))),
    h("h4", {}, "New group"),
    createForm,
  );
  body.replaceChildren(friendsSection, groupsSection);
}

export async function openMembers(app, groupId) {
  membersGroup = groupId;
  const dialog = $("members-dialog");
  if (!dialog.open) dialog.showModal();
  await renderMembers(app);
}

async function renderMembers(app) {
  const groupId = membersGroup;
  const group = app.groups.get(groupId);
  $("members-title").textContent = `Members of ${group?.name ?? `group ${groupId}`}`;
  const members = [];
  let after;
  for (let page = 0; page < 20; page++) {
    const reply = await act(app, "group_members", after === undefined ? { group: groupId } : { group: groupId, after });
    if (!reply) break;
    members.push(...reply.members);
    if (!reply.more || reply.members.length === 0) break;
    after = reply.members[reply.members.length - 1].id;
  }
  const myRole = members.find((m) => m.id === app.me.id)?.role ?? group?.role;
  const manager = myRole === "creator" || myRole === "admin";
  const rerender = () => renderMembers(app);
  $("members-body").replaceChildren(
    manager ? idForm("Invite a user by id", "Invite", async (id) => { await act(app, "group_invite", { group: groupId, id }, `User ${id} is invited.`); }) : null,
    h("p", { class: "muted" }, `${members.length} member${members.length === 1 ? "" : "s"}`),
    h("ul", { class: "plain" }, members.map((m) => h(
      "li",
      { class: "row spread" },
      h("span", {}, `${m.online ? "● " : "○ "}${m.name} (id ${m.id}, ${m.role})`),
      h("span", { class: "row" },
        myRole === "creator" && m.role !== "creator"
          ? button(m.role === "admin" ? "Make member" : "Make admin", async () => {
            await act(app, "group_role", { group: groupId, id: m.id, role: m.role === "admin" ? "member" : "admin" }, `${m.name}'s role changed.`);
            rerender();
          }, "secondary")
          : null,
        manager && m.id !== app.me.id && m.role !== "creator" && (myRole === "creator" || m.role === "member")
          ? button("Remove", async () => { await act(app, "group_kick", { group: groupId, id: m.id }, `${m.name} was removed.`); rerender(); }, "danger")
          : null),
    ))),
  );
}

export function openAdmin(app) {
  const dialog = $("admin-dialog");
  const reason = h("input", { id: "admin-kick-reason", maxLength: 200 });
  const seconds = h("input", { id: "admin-mute-seconds", inputmode: "numeric", value: "600" });
  const text = h("textarea", { id: "admin-broadcast", rows: 2, maxLength: 4096 });
  $("admin-body").replaceChildren(
    idForm("Disconnect a user (id)", "Kick", (id) => act(app, "kick", reason.value ? { id, reason: reason.value } : { id }, `User ${id} was disconnected.`),
      [h("label", { htmlFor: "admin-kick-reason", class: "visually-hidden" }, "Reason"), reason]),
    idForm("Mute a user (id) for seconds", "Mute", (id) => {
      const secs = Number(seconds.value);
      if (!Number.isSafeInteger(secs) || secs < 1) return notify("Mute: enter a number of seconds.", { error: true });
      return act(app, "mute", { id, seconds: secs }, (r) => `User ${id} is muted until ${new Date(r.until).toLocaleString()}.`);
    }, [h("label", { htmlFor: "admin-mute-seconds", class: "visually-hidden" }, "Seconds"), seconds]),
    idForm("Unmute a user (id)", "Unmute", (id) => act(app, "unmute", { id }, `User ${id} is no longer muted.`)),
    h("form", {
      class: "stack",
      onsubmit: async (e) => {
        e.preventDefault();
        if (!text.value.trim()) return notify("Write something to broadcast.", { error: true });
        if (await act(app, "broadcast", { text: text.value }, "Broadcast sent.")) text.value = "";
        return undefined;
      },
    }, h("label", { htmlFor: "admin-broadcast" }, "Broadcast to everyone online"), text, h("button", { type: "submit" }, "Broadcast")),
  );
  if (!dialog.open) dialog.showModal();
}

/// Redraws the friends/groups or members dialog if it is open (after an event).
export function refreshOpenDialogs(app) {
  if ($("manage-dialog").open) renderManage(app);
  if ($("members-dialog").open && membersGroup !== null) {
    if (app.groups.has(membersGroup)) renderMembers(app);
    else $("members-dialog").close();
  }
}
