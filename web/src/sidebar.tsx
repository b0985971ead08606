// The left pane: who I am, the chats / contacts tabs, the conversation list
// and the contacts panel (search, requests, friends, blocked users).
import { useState } from "preact/hooks";
import { api, enc } from "./api";
import { formatTime, t } from "./i18n";
import {
  activeId, blocked, connection, contactId, conversationTitle, displayName, friends, groupIdOf, loadSocial,
  me, myId, openConversation, pane, presence, previewOf, reportError, requestsIn, requestsOut, sortedConversations,
  tab,
} from "./state";
import type { Conversation, FriendRequest, Profile } from "./types";
import { attempt, Avatar, Icon, Modal } from "./ui";
import { NewGroupDialog, SettingsDialog } from "./dialogs";
import { systemText } from "./chat";
import { SearchResults } from "./search";

export function Sidebar() {
  const s = t();
  const [dialog, setDialog] = useState<"settings" | "group" | null>(null);
  const unreadChats = sortedConversations.value.filter((c) => Number(c.unreadCount ?? 0) > 0 && !c.muted).length;
  const profile = me.value;
  return (
    <aside class="sidebar" aria-label={s.chats}>
      {connection.value !== "online" && (
        <div class={`conn-banner ${connection.value}`} role="status">
          {connection.value === "offline" ? s.offlineBanner : s.connecting}
        </div>
      )}
      <div class="side-head">
        <button class="me" aria-label={s.settings} onClick={() => setDialog("settings")}>
          <Avatar id={myId.value} name={profile?.nickname || profile?.username || ""} size={38} />
          <span>
            <strong>{profile?.nickname || profile?.username || "…"}</strong>
            <small>@{profile?.username ?? ""}</small>
          </span>
        </button>
        <button class="icon-btn" aria-label={s.newGroup} title={s.newGroup} onClick={() => setDialog("group")}>
          <Icon name="group" />
        </button>
        <button class="icon-btn" aria-label={s.settings} title={s.settings} onClick={() => setDialog("settings")}>
          <Icon name="settings" />
        </button>
      </div>
      <div class="tabs" role="tablist">
        <button role="tab" aria-selected={tab.value === "chats"} onClick={() => (tab.value = "chats")}>
          {s.chats}
          {unreadChats > 0 && <span class="badge dot-count">{unreadChats}</span>}
        </button>
        <button role="tab" aria-selected={tab.value === "contacts"} onClick={() => (tab.value = "contacts")}>
          {s.contacts}
          {requestsIn.value.length > 0 && <span class="badge dot-count">{requestsIn.value.length}</span>}
        </button>
      </div>
      {tab.value === "chats" ? <ChatList /> : <ContactsPanel />}
      {dialog === "settings" && <SettingsDialog onClose={() => setDialog(null)} />}
      {dialog === "group" && <NewGroupDialog onClose={() => setDialog(null)} />}
    </aside>
  );
}

function ChatList() {
  const s = t();
  const [filter, setFilter] = useState("");
  const list = sortedConversations.value;
  return (
    <>
      <div class="side-search" role="search">
        <input
          class="input" type="search" aria-label={s.searchAll} placeholder={s.searchAll} value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
          onKeyDown={(e) => e.key === "Escape" && setFilter("")}
        />
      </div>
      {filter.trim() ? (
        <SearchResults query={filter} />
      ) : (
        <nav class="list" aria-label={s.chats}>
          {list.length === 0 && <p class="list-empty">{s.noChats}</p>}
          {list.map((c) => (
            <ConversationItem key={c.id} c={c} />
          ))}
        </nav>
      )}
    </>
  );
}

function ConversationItem({ c }: { c: Conversation }) {
  const s = t();
  const title = conversationTitle(c);
  const unread = Number(c.unreadCount ?? 0);
  const peer = c.peerUserId;
  const online = !!peer && !!presence.value.get(peer)?.online;
  const last = c.lastMessage;
  let preview = "";
  if (last?.body?.system) preview = systemText(last);
  else if (last?.body?.recalled) preview = s.recalledBy(displayName(last.senderId));
  else if (last) {
    const who = c.kind === "group" && last.senderId ? `${last.senderId === myId.value ? s.you : displayName(last.senderId)}: ` : "";
    preview = who + previewOf(last, s.kinds);
  }
  const label = `${title}${unread ? `, ${unread}` : ""}`;
  return (
    <button class="conv" aria-current={activeId.value === c.id} aria-label={label} onClick={() => openConversation(c.id)}>
      <Avatar id={groupIdOf(c.id) ?? peer ?? c.id} name={title} online={online} />
      <span class="conv-main">
        <span class="conv-top">
          <span class="conv-name">{title}</span>
          {c.muted && <span class="flag" title={s.muted} aria-label={s.muted}><Icon name="bell_off" /></span>}
          {c.lastActivityMs && c.lastSeq && <span class="conv-time">{formatTime(Number(c.lastActivityMs), true)}</span>}
        </span>
        <span class="conv-bottom">
          <span class="conv-preview">{preview}</span>
          {c.pinned && <span class="flag" title={s.pinned} aria-label={s.pinned}><Icon name="pin" /></span>}
          {unread > 0 && <span class={`badge ${c.muted ? "muted" : ""}`} aria-hidden="true">{unread > 99 ? "99+" : unread}</span>}
        </span>
      </span>
    </button>
  );
}

function ContactsPanel() {
  const s = t();
  const [q, setQ] = useState("");
  const [results, setResults] = useState<Profile[] | null>(null);
  const [adding, setAdding] = useState<Profile | null>(null);
  const search = async (e: Event) => {
    e.preventDefault();
    const query = q.trim();
    if (!query) return setResults(null);
    await attempt(async () => {
      const r = await api.get<{ users?: Profile[] }>(`/v1/users/search?q=${enc(query)}&limit=20`);
      setResults(r.users ?? []);
    }, reportError);
  };
  const friendList = [...friends.value.values()].sort((a, b) =>
    (a.profile.nickname || a.profile.username || "").localeCompare(b.profile.nickname || b.profile.username || ""),
  );
  const outgoing = requestsOut.value.filter((r) => !r.status || r.status === "pending");
  return (
    <>
      <form class="side-search" role="search" onSubmit={search}>
        <input class="input" type="search" aria-label={s.searchUsers} placeholder={s.searchUsersShort} value={q} onInput={(e) => { setQ(e.currentTarget.value); if (!e.currentTarget.value) setResults(null); }} />
      </form>
      <div class="list">
        {results && (
          <section aria-label={s.search}>
            <div class="group-label">{s.search}</div>
            {results.length === 0 && <p class="list-empty">{s.noResults}</p>}
            {results.map((p) => (
              <div class="contact" key={p.userId}>
                <Avatar id={p.userId} name={p.nickname || p.username || ""} size={38} />
                <span class="info">
                  <strong>{p.nickname || p.username}</strong>
                  <small>@{p.username}</small>
                </span>
                {friends.value.has(p.userId) ? (
                  <button class="btn small secondary" onClick={() => { contactId.value = p.userId; pane.value = "chat"; }}>{s.friends}</button>
                ) : outgoing.some((r) => r.toUserId === p.userId) ? (
                  <span class="role">{s.pending}</span>
                ) : (
                  <button class="btn small" aria-label={`${s.addFriend} ${p.nickname || p.username}`} onClick={() => setAdding(p)}>{s.addFriend}</button>
                )}
              </div>
            ))}
          </section>
        )}
        {requestsIn.value.length > 0 && (
          <section aria-label={s.requests}>
            <div class="group-label">{s.requests}</div>
            {requestsIn.value.map((r) => <IncomingRequest key={r.id} r={r} />)}
          </section>
        )}
        <section aria-label={s.friends}>
          <div class="group-label">{s.friends} ({friendList.length})</div>
          {friendList.map((f) => {
            const p = f.profile;
            const pr = presence.value.get(p.userId);
            return (
              <button class="contact" key={p.userId} aria-current={contactId.value === p.userId} onClick={() => { contactId.value = p.userId; pane.value = "chat"; }}>
                <Avatar id={p.userId} name={p.nickname || p.username || ""} size={38} online={!!pr?.online} />
                <span class="info">
                  <strong>{p.nickname || p.username}</strong>
                  <small>{pr?.online ? s.online : p.signature || `@${p.username}`}</small>
                </span>
              </button>
            );
          })}
        </section>
        {outgoing.length > 0 && (
          <section aria-label={s.outgoing}>
            <div class="group-label">{s.outgoing}</div>
            {outgoing.map((r) => (
              <div class="contact" key={r.id}>
                <Avatar id={r.toUserId} name={r.peer?.nickname || r.peer?.username || ""} size={38} />
                <span class="info">
                  <strong>{r.peer?.nickname || r.peer?.username}</strong>
                  <small>{r.greeting}</small>
                </span>
                <span class="role">{s.pending}</span>
              </div>
            ))}
          </section>
        )}
        {blocked.value.length > 0 && (
          <section aria-label={s.blocked}>
            <div class="group-label">{s.blocked}</div>
            {blocked.value.map((p) => (
              <div class="contact" key={p.userId}>
                <Avatar id={p.userId} name={p.nickname || p.username || ""} size={38} />
                <span class="info"><strong>{p.nickname || p.username}</strong><small>@{p.username}</small></span>
                <button class="btn small secondary" aria-label={`${s.unblock} ${p.nickname || p.username}`} onClick={() => attempt(async () => { await api.del(`/v1/blocks/${enc(p.userId)}`); await loadSocial(); }, reportError)}>
                  {s.unblock}
                </button>
              </div>
            ))}
          </section>
        )}
      </div>
      {adding && <AddFriendDialog p={adding} onClose={() => setAdding(null)} />}
    </>
  );
}

function IncomingRequest({ r }: { r: FriendRequest }) {
  const s = t();
  const name = r.peer?.nickname || r.peer?.username || displayName(r.fromUserId);
  const answer = (verb: "accept" | "reject") =>
    attempt(async () => {
      await api.post(`/v1/friends/requests/${enc(r.id)}/${verb}`);
      requestsIn.value = requestsIn.value.filter((x) => x.id !== r.id);
      await loadSocial();
    }, reportError);
  return (
    <div class="request" role="group" aria-label={name}>
      <div class="contact">
        <Avatar id={r.fromUserId} name={name} size={38} />
        <span class="info"><strong>{name}</strong><small>@{r.peer?.username}</small></span>
      </div>
      {r.greeting && <p class="greeting">{r.greeting}</p>}
      <div class="btns">
        <button class="btn small secondary" onClick={() => answer("reject")}>{s.reject}</button>
        <button class="btn small" onClick={() => answer("accept")}>{s.accept}</button>
      </div>
    </div>
  );
}

function AddFriendDialog({ p, onClose }: { p: Profile; onClose: () => void }) {
  const s = t();
  const [greeting, setGreeting] = useState(s.greetingDefault);
  const send = () =>
    attempt(async () => {
      const r = await api.post<{ request?: FriendRequest; becameFriends?: boolean }>("/v1/friends/requests", { toUserId: p.userId, greeting });
      if (r.request && !r.becameFriends) requestsOut.value = [r.request, ...requestsOut.value.filter((x) => x.toUserId !== p.userId)];
      onClose();
      await loadSocial();
    }, reportError);
  return (
    <Modal
      title={`${s.addFriend}: ${p.nickname || p.username}`}
      onClose={onClose}
      foot={<><button class="btn secondary" onClick={onClose}>{s.cancel}</button><button class="btn" onClick={send}>{s.sendRequest}</button></>}
    >
      <label class="field">
        {s.greeting}
        <textarea rows={3} maxLength={200} value={greeting} onInput={(e) => setGreeting(e.currentTarget.value)} />
      </label>
    </Modal>
  );
}

