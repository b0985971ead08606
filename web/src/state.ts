// The client's state: signals that the views read, and the actions that
// change them (HTTP calls, inbox entries from the WebSocket session).
//
// What the server says is the truth; the client keeps a cache of it:
// - the conversation list (meta: last message, unread, flags);
// - per conversation, one contiguous window of its history (`Timeline`),
//   which may or may not reach the latest message;
// - friends, requests, blocks, groups, profiles and presence.
// Sends not yet acked live in `pending` until their ack (or failure) and are
// shown after the timeline; their `clientMsgId` is kept for retries.
import { batch, computed, signal } from "@preact/signals";
import { api, enc, ApiError, loadSession, saveSession, setSessionLostHandler } from "./api";
import type {
  Conversation, Friend, FriendRequest, Group, InboxEntry, Member, Message, MessageBody, Profile, SendAck, Session,
} from "./types";

export type Msg = Message & { status?: "sending" | "failed"; error?: string };

export interface Timeline {
  msgs: Msg[];
  hasOlder: boolean;
  atLatest: boolean;
  loading?: boolean;
  /** Bumped when the window is replaced (a jump), so views reset their scroll. */
  epoch: number;
}

export interface Pending {
  clientMsgId: string;
  conversationId: string;
  body: MessageBody;
  replyToSeq?: string;
  replyTo?: Msg;
  status: "sending" | "failed";
  error?: string;
  createdAtMs: number;
  /** Sends answered `unavailable` in a row (retried a few times on their own). */
  unavailable?: number;
}

export const session = signal<Session | null>(loadSession());
export const me = signal<Profile | null>(null);
export const conversations = signal<Map<string, Conversation>>(new Map());
export const timelines = signal<Map<string, Timeline>>(new Map());
export const pending = signal<Pending[]>([]);
export const profiles = signal<Map<string, Profile>>(new Map());
export const friends = signal<Map<string, Friend>>(new Map());
export const requestsIn = signal<FriendRequest[]>([]);
export const requestsOut = signal<FriendRequest[]>([]);
export const blocked = signal<Profile[]>([]);
export const groups = signal<Map<string, Group>>(new Map());
export const groupMembers = signal<Map<string, Member[]>>(new Map());
/** Groups the user is no longer in (left, removed, dismissed): conversation ids. */
export const formerGroups = signal<Set<string>>(new Set());
export const presence = signal<Map<string, { online: boolean; lastSeenMs: number }>>(new Map());
/** conversation id -> user id -> until (ms). */
export const typing = signal<Map<string, Map<string, number>>>(new Map());
export const connection = signal<"connecting" | "online" | "offline">("connecting");

export type Pane = "list" | "chat" | "details";
export const activeId = signal<string | null>(null);
export const pane = signal<Pane>("list");
export const tab = signal<"chats" | "contacts">("chats");
export const detailsOpen = signal(false);
/** The contact shown in the main area (contacts tab). */
export const contactId = signal<string | null>(null);
export const toast = signal<{ text: string; error?: boolean } | null>(null);
/** A message to highlight after a jump. */
/** Asks for a voice message's transcript now; it shows when it comes. */
export async function transcribe(m: Msg) {
  const r = await api.post<{ transcript?: string }>(`/v1/messages/${enc(m.id)}/transcribe`);
  if (r.transcript) transcripts.value = new Map(transcripts.value).set(`${m.conversationId}:${m.seq}`, r.transcript);
}

/** Transcripts that came as inbox entries, by "conversationId:seq". */
export const transcripts = signal<Map<string, string>>(new Map());
export const highlight = signal<{ conversationId: string; seq: string } | null>(null);

export const myId = computed(() => session.value?.userId ?? "");

// ---------------------------------------------------------------- helpers

export function directId(a: string, b: string): string {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

export function peerOf(conversationId: string): string | undefined {
  if (!conversationId.startsWith("d:")) return undefined;
  const [, a, b] = conversationId.split(":");
  return a === myId.value ? b : a;
}

export function groupIdOf(conversationId: string): string | undefined {
  return conversationId.startsWith("g:") ? conversationId.slice(2) : undefined;
}

export function displayName(userId: string | undefined): string {
  if (!userId) return "";
  if (userId === myId.value && me.value) return me.value.nickname || me.value.username || "";
  const p = friends.value.get(userId)?.profile ?? profiles.value.get(userId);
  if (!p) {
    ensureProfiles([userId]);
    return "…";
  }
  return p.nickname || p.username || "";
}

/** The file id of a user's avatar picture ("" for none, or not known yet). */
export function avatarOf(userId: string): string {
  if (userId === myId.value) return me.value?.avatar ?? "";
  return (friends.value.get(userId)?.profile ?? profiles.value.get(userId))?.avatar ?? "";
}

export function conversationTitle(c: Conversation): string {
  if (c.kind === "group") {
    const g = groups.value.get(groupIdOf(c.id) ?? "");
    return g?.name || c.title || "";
  }
  return displayName(c.peerUserId ?? peerOf(c.id));
}

export function showToast(text: string, error = false) {
  toast.value = { text, error };
  const current = toast.value;
  setTimeout(() => {
    if (toast.value === current) toast.value = null;
  }, 4000);
}

const num = (s: string | undefined) => Number(s ?? 0);

function setMap<K, V>(sig: { value: Map<K, V> }, key: K, value: V | undefined) {
  const next = new Map(sig.value);
  if (value === undefined) next.delete(key);
  else next.set(key, value);
  sig.value = next;
}

// --------------------------------------------------------------- profiles

let wantedProfiles = new Set<string>();
let profileTimer: ReturnType<typeof setTimeout> | null = null;

/** Fetches the profiles not known yet, in one batch per tick. */
export function ensureProfiles(ids: string[]) {
  for (const id of ids) {
    if (id && !profiles.value.has(id) && !friends.value.has(id) && id !== myId.value) wantedProfiles.add(id);
  }
  if (wantedProfiles.size === 0 || profileTimer) return;
  profileTimer = setTimeout(async () => {
    const ids = [...wantedProfiles].slice(0, 200);
    wantedProfiles = new Set([...wantedProfiles].slice(200));
    profileTimer = null;
    try {
      const r = await api.get<{ profiles?: Profile[] }>(`/v1/profiles?user_ids=${ids.map(enc).join(",")}`);
      const next = new Map(profiles.value);
      for (const p of r.profiles ?? []) next.set(p.userId, p);
      for (const id of ids) if (!next.has(id)) next.set(id, { userId: id, nickname: "?" });
      profiles.value = next;
    } catch {
      /* retried when next asked */
    }
    if (wantedProfiles.size) ensureProfiles([]);
  }, 0);
}

// ----------------------------------------------------------- conversations

export const sortedConversations = computed(() =>
  [...conversations.value.values()].sort(
    (a, b) =>
      Number(!!b.pinned) - Number(!!a.pinned) ||
      num(b.lastActivityMs) - num(a.lastActivityMs) ||
      (a.id < b.id ? -1 : 1),
  ),
);

// When each conversation last changed from a live event or a local action,
// on a counter, so a list fetched meanwhile does not undo it.
let edits = 0;
const editedAt = new Map<string, number>();

function putConversation(id: string, c: Conversation) {
  editedAt.set(id, ++edits);
  setMap(conversations, id, c);
}

export async function loadConversations() {
  const since = edits;
  const all: Conversation[] = [];
  let query = "?limit=200";
  for (let page = 0; page < 10; page++) {
    const r = await api.get<{ conversations?: Conversation[]; hasMore?: boolean }>(`/v1/conversations${query}`);
    all.push(...(r.conversations ?? []));
    const last = all[all.length - 1];
    if (!r.hasMore || !last) break;
    query = `?limit=200&before_pinned=${!!last.pinned}&before_activity_ms=${last.lastActivityMs ?? 0}&before_id=${enc(last.id)}`;
  }
  const next = new Map<string, Conversation>();
  // A live event applied while the pages were fetched is newer than what they
  // say about that conversation (a pin from another device, a message): keep it.
  for (const c of all) {
    const local = conversations.value.get(c.id);
    next.set(c.id, local && (editedAt.get(c.id) ?? 0) > since ? local : c);
  }
  // Keep local placeholders (a chat opened with a friend, no message yet).
  for (const [id, c] of conversations.value) if (!next.has(id) && !c.lastSeq) next.set(id, c);
  conversations.value = next;
  ensureProfiles(all.map((c) => c.peerUserId ?? "").filter(Boolean));
}

let conversationsTimer: ReturnType<typeof setTimeout> | null = null;
function reloadConversationsSoon() {
  if (conversationsTimer) return;
  conversationsTimer = setTimeout(() => {
    conversationsTimer = null;
    loadConversations().catch(() => {});
  }, 300);
}

export function updateConversation(id: string, f: (c: Conversation) => Conversation) {
  const c = conversations.value.get(id);
  if (c) putConversation(id, f(c));
}

/** Opens (or creates locally) the chat with a friend. */
export function openDirect(userId: string) {
  const id = directId(myId.value, userId);
  if (!conversations.value.has(id)) {
    putConversation(id, { id, kind: "direct", peerUserId: userId, lastActivityMs: String(Date.now()) });
  }
  openConversation(id);
}

export function openConversation(id: string) {
  batch(() => {
    activeId.value = id;
    tab.value = "chats";
    pane.value = "chat";
    contactId.value = null;
  });
  const t = timelines.value.get(id);
  if (!t) loadLatest(id).catch(reportError);
  const peer = peerOf(id);
  if (peer) refreshPresence([peer]);
  const gid = groupIdOf(id);
  if (gid && !formerGroups.value.has(id)) loadGroup(gid).catch(() => {});
  markRead(id);
}

// ---------------------------------------------------------------- history

const PAGE = 50;

type Page = { messages?: Message[]; hasMore?: boolean };

function setTimeline(id: string, t: Timeline | undefined) {
  setMap(timelines, id, t);
}

/**
 * Messages that came (an ack, a push) while the newest page of their
 * conversation was on its way: the server may have read the page before
 * they were stored, so they join it when it comes. Per conversation, the
 * loads in flight and what came meanwhile.
 */
const arriving = new Map<string, { loads: number; msgs: Message[] }>();

/** Replaces the window with the newest page. */
export async function loadLatest(id: string) {
  const waiting = arriving.get(id) ?? { loads: 0, msgs: [] };
  waiting.loads += 1;
  arriving.set(id, waiting);
  let r: Page;
  try {
    r = await api.get<Page>(`/v1/conversations/${enc(id)}/messages?limit=${PAGE}`);
  } finally {
    waiting.loads -= 1;
    if (!waiting.loads) arriving.delete(id);
  }
  const page = r.messages ?? [];
  const top = num(page[page.length - 1]?.seq);
  const late = new Map<number, Message>();
  for (const m of waiting.msgs) if (num(m.seq) > top) late.set(num(m.seq), m);
  const msgs = [...page, ...[...late.values()].sort((a, b) => num(a.seq) - num(b.seq))];
  const old = timelines.value.get(id);
  setTimeline(id, { msgs, hasOlder: !!r.hasMore, atLatest: true, epoch: (old?.epoch ?? 0) + 1 });
  ensureProfiles(msgs.flatMap(messageUsers));
}

/** Extends the window upwards. Answers how many messages were added. */
export async function loadOlder(id: string): Promise<number> {
  const t = timelines.value.get(id);
  if (!t || !t.hasOlder || t.loading) return 0;
  setTimeline(id, { ...t, loading: true });
  try {
    const first = t.msgs[0];
    const r = await api.get<Page>(
      `/v1/conversations/${enc(id)}/messages?limit=${PAGE * 2}${first ? `&before_seq=${first.seq}` : ""}`,
    );
    const cur = timelines.value.get(id) ?? t;
    const older = (r.messages ?? []).filter((m) => !cur.msgs.length || num(m.seq) < num(cur.msgs[0].seq));
    setTimeline(id, { ...cur, msgs: [...older, ...cur.msgs], hasOlder: !!r.hasMore, loading: false });
    ensureProfiles(older.flatMap(messageUsers));
    return older.length;
  } catch (e) {
    setTimeline(id, { ...(timelines.value.get(id) ?? t), loading: false });
    throw e;
  }
}

/** Extends the window downwards (after a jump into the past). */
export async function loadNewer(id: string): Promise<number> {
  const t = timelines.value.get(id);
  if (!t || t.atLatest || t.loading) return 0;
  setTimeline(id, { ...t, loading: true });
  try {
    const last = t.msgs[t.msgs.length - 1];
    const r = await api.get<Page>(
      `/v1/conversations/${enc(id)}/messages?limit=${PAGE * 2}&after_seq=${last ? last.seq : 0}`,
    );
    const cur = timelines.value.get(id) ?? t;
    const lastSeq = num(cur.msgs[cur.msgs.length - 1]?.seq);
    const newer = (r.messages ?? []).filter((m) => num(m.seq) > lastSeq);
    setTimeline(id, { ...cur, msgs: [...cur.msgs, ...newer], atLatest: !r.hasMore, loading: false });
    ensureProfiles(newer.flatMap(messageUsers));
    return newer.length;
  } catch (e) {
    setTimeline(id, { ...(timelines.value.get(id) ?? t), loading: false });
    throw e;
  }
}

/** Shows the message at `seq`: in the window, or a new window around it. */
export async function jumpTo(id: string, seq: string) {
  const t = timelines.value.get(id);
  if (!t || !t.msgs.some((m) => m.seq === seq)) {
    const [before, after] = await Promise.all([
      api.get<Page>(`/v1/conversations/${enc(id)}/messages?limit=${PAGE}&before_seq=${num(seq) + 1}`),
      api.get<Page>(`/v1/conversations/${enc(id)}/messages?limit=${PAGE}&after_seq=${seq}`),
    ]);
    const msgs = [...(before.messages ?? []), ...(after.messages ?? [])];
    setTimeline(id, { msgs, hasOlder: !!before.hasMore, atLatest: !after.hasMore, epoch: (t?.epoch ?? 0) + 1 });
    ensureProfiles(msgs.flatMap(messageUsers));
  }
  highlight.value = { conversationId: id, seq };
}

function messageUsers(m: Message): string[] {
  return [m.senderId ?? "", ...(m.body?.system?.userIds ?? []), m.body?.system?.actorId ?? ""].filter(Boolean);
}

// -------------------------------------------------------------- incoming

/** A message of the inbox, a large group or an ack: into the list and the window. */
export function receiveMessage(m: Message, fromAck = false) {
  const id = m.conversationId;
  const mine = m.senderId === myId.value;
  const known = conversations.value.get(id);
  const isNew = !known || num(m.seq) > num(known.lastSeq);
  if (!known) {
    const peer = peerOf(id);
    putConversation(id, {
      id,
      kind: id.startsWith("g:") ? "group" : "direct",
      peerUserId: peer,
      lastSeq: m.seq,
      lastMessage: m,
      lastActivityMs: m.serverTsMs,
      unreadCount: mine ? "0" : "1",
    });
    if (!fromAck) reloadConversationsSoon();
  } else if (isNew) {
    const viewing = activeId.value === id && document.visibilityState === "visible";
    putConversation(id, {
      ...known,
      lastSeq: m.seq,
      lastMessage: m,
      lastActivityMs: m.serverTsMs,
      // My own messages never count as unread, and do not move my read
      // position on the server either (markRead does that).
      unreadCount: mine || viewing || num(m.seq) <= num(known.readSeq) ? known.unreadCount : String(num(known.unreadCount) + 1),
    });
  }
  if (m.clientMsgId && mine) {
    pending.value = pending.value.filter((p) => p.clientMsgId !== m.clientMsgId);
  }
  insertIntoTimeline(m);
  ensureProfiles(messageUsers(m));
  const sys = m.body?.system;
  if (sys) applyNotice(id, sys.kind, sys.userIds ?? []);
  if (activeId.value === id && !mine) markRead(id);
  if (!mine) {
    const tmap = typing.value.get(id);
    if (tmap?.has(m.senderId ?? "")) {
      const next = new Map(tmap);
      next.delete(m.senderId ?? "");
      setMap(typing, id, next);
    }
  }
}

function insertIntoTimeline(m: Message) {
  arriving.get(m.conversationId)?.msgs.push(m);
  const t = timelines.value.get(m.conversationId);
  if (!t) return;
  const seq = num(m.seq);
  const msgs = t.msgs;
  const last = msgs[msgs.length - 1];
  if (!last || seq > num(last.seq)) {
    if (!t.atLatest) return; // the window is in the past: "jump to latest" shows it
    if (last && seq > num(last.seq) + 1) {
      // A gap (a large group, a device long offline): read it from the history.
      setTimeline(m.conversationId, { ...t, atLatest: false });
      loadNewer(m.conversationId).catch(() => {});
      return;
    }
    setTimeline(m.conversationId, { ...t, msgs: [...msgs, m] });
    return;
  }
  // Within the window: replace or insert in seq order (never twice).
  const i = msgs.findIndex((x) => num(x.seq) >= seq);
  if (i >= 0 && num(msgs[i].seq) === seq) {
    if (msgs[i].id === m.id && !msgs[i].status) return;
    const next = msgs.slice();
    next[i] = { ...msgs[i], ...m };
    setTimeline(m.conversationId, { ...t, msgs: next });
  } else if (i >= 0 && (i > 0 || !t.hasOlder)) {
    const next = msgs.slice();
    next.splice(i, 0, m);
    setTimeline(m.conversationId, { ...t, msgs: next });
  }
}

function applyNotice(conversationId: string, kind: string, userIds: string[]) {
  const gid = groupIdOf(conversationId);
  if (!gid) return;
  const me = myId.value;
  const gone = kind === "dismissed" || ((kind === "member_removed" || kind === "member_left") && userIds.includes(me));
  if (gone) {
    const next = new Set(formerGroups.value);
    next.add(conversationId);
    formerGroups.value = next;
    setMap(groups, gid, undefined);
    return;
  }
  if ((kind === "member_added" || kind === "created") && userIds.includes(me) && formerGroups.value.has(conversationId)) {
    const next = new Set(formerGroups.value);
    next.delete(conversationId);
    formerGroups.value = next;
  }
  groupReloads.add(gid);
  if (!groupTimer) {
    groupTimer = setTimeout(() => {
      const ids = [...groupReloads];
      groupReloads.clear();
      groupTimer = null;
      for (const g of ids) {
        loadGroup(g).catch(() => {});
        if (groupMembers.value.has(g)) loadMembers(g).catch(() => {});
      }
    }, 200);
  }
}
const groupReloads = new Set<string>();
let groupTimer: ReturnType<typeof setTimeout> | null = null;

/** Applies one inbox entry. */
export function applyEntry(e: InboxEntry) {
  if (e.message) return receiveMessage(e.message);
  if (e.recalled) {
    const r = e.recalled;
    const body: MessageBody = { recalled: { byUserId: r.byUserId, atMs: r.atMs } };
    patchMessage(r.conversationId, r.seq, (m) => ({ ...m, body, replyTo: m.replyTo }));
    updateConversation(r.conversationId, (c) =>
      c.lastMessage?.seq === r.seq ? { ...c, lastMessage: { ...c.lastMessage, body } } : c,
    );
    return;
  }
  if (e.transcribed) {
    const tr = e.transcribed;
    // Kept aside too: a history page fetched before the transcript came
    // may land after this entry (VoiceBody reads both).
    transcripts.value = new Map(transcripts.value).set(`${tr.conversationId}:${tr.seq}`, tr.transcript ?? "");
    patchMessage(tr.conversationId, tr.seq, (m) =>
      m.body?.voice ? { ...m, body: { voice: { ...m.body.voice, transcript: tr.transcript } } } : m,
    );
    return;
  }
  if (e.read) {
    const r = e.read;
    if (r.userId === myId.value) {
      updateConversation(r.conversationId, (c) =>
        num(r.readSeq) >= num(c.readSeq)
          ? { ...c, readSeq: r.readSeq, unreadCount: num(r.readSeq) >= num(c.lastSeq) ? "0" : c.unreadCount }
          : c,
      );
    } else {
      updateConversation(r.conversationId, (c) =>
        num(r.readSeq) > num(c.peerReadSeq) ? { ...c, peerReadSeq: r.readSeq } : c,
      );
    }
    return;
  }
  if (e.settings) {
    const s = e.settings;
    updateConversation(s.conversationId, (c) => ({ ...c, pinned: !!s.pinned, muted: !!s.muted }));
    return;
  }
  if (e.deleted) {
    const d = e.deleted;
    const t = timelines.value.get(d.conversationId);
    if (t) setTimeline(d.conversationId, { ...t, msgs: t.msgs.filter((m) => !d.seqs.includes(m.seq)) });
    return;
  }
  if (e.membership) {
    applyNotice(e.membership.conversationId, "member_removed", [myId.value]);
    return;
  }
  if (e.social) {
    // Friendships change at once; requests are read again (a replayed old
    // request may have been answered since, on another device).
    const s = e.social;
    if (s.friendAdded) {
      const p = s.friendAdded;
      setMap(friends, p.userId, { profile: p, sinceMs: String(Date.now()) });
      refreshPresence([p.userId]);
    }
    if (s.friendRemoved) setMap(friends, s.friendRemoved, undefined);
    if (s.profileUpdated) {
      // A friend's (or my own, from another device) new name or avatar:
      // everywhere it shows, at once.
      // The whole profile replaces the one held (a cleared avatar is an
      // absent field), unless the one held is newer (a replayed entry).
      const p = s.profileUpdated;
      const newer = (held: Profile | null | undefined) => !held || Number(p.updatedAtMs ?? 0) >= Number(held.updatedAtMs ?? 0);
      if (p.userId === myId.value && newer(me.value)) me.value = p;
      const f = friends.value.get(p.userId);
      if (f && newer(f.profile)) setMap(friends, p.userId, { ...f, profile: p });
      if (profiles.value.has(p.userId) && newer(profiles.value.get(p.userId))) setMap(profiles, p.userId, p);
      return;
    }
    reloadSocialSoon();
  }
}

let socialTimer: ReturnType<typeof setTimeout> | null = null;
function reloadSocialSoon() {
  if (socialTimer) return;
  socialTimer = setTimeout(() => {
    socialTimer = null;
    loadSocial().catch(() => {});
  }, 300);
}

function patchMessage(conversationId: string, seq: string, f: (m: Msg) => Msg) {
  const t = timelines.value.get(conversationId);
  if (!t) return;
  const i = t.msgs.findIndex((m) => m.seq === seq);
  if (i < 0) return;
  const msgs = t.msgs.slice();
  msgs[i] = f(msgs[i]);
  setTimeline(conversationId, { ...t, msgs });
}

export function applyPresence(userId: string, online: boolean, lastSeenMs: number) {
  setMap(presence, userId, { online, lastSeenMs });
}

export function applyTyping(conversationId: string, userId: string) {
  if (userId === myId.value) return;
  const next = new Map(typing.value.get(conversationId) ?? []);
  next.set(userId, Date.now() + 5000);
  setMap(typing, conversationId, next);
  setTimeout(() => {
    const cur = typing.value.get(conversationId);
    if (cur && (cur.get(userId) ?? 0) <= Date.now()) {
      const n = new Map(cur);
      n.delete(userId);
      setMap(typing, conversationId, n);
    }
  }, 5100);
}

/** The latest seq of a large group, after a resume: read what was missed. */
export function applyGroupHead(conversationId: string, lastSeq: string) {
  const c = conversations.value.get(conversationId);
  if (!c || num(c.lastSeq) < num(lastSeq)) reloadConversationsSoon();
  const t = timelines.value.get(conversationId);
  const last = t?.msgs[t.msgs.length - 1];
  if (t && t.atLatest && num(last?.seq) < num(lastSeq)) {
    setTimeline(conversationId, { ...t, atLatest: false });
    loadNewer(conversationId).catch(() => {});
  }
}

// -------------------------------------------------------------- reads

const readTimers = new Map<string, ReturnType<typeof setTimeout>>();

/** Marks the open conversation read up to its last message (debounced). */
export function markRead(id: string) {
  if (readTimers.has(id)) return;
  readTimers.set(
    id,
    setTimeout(async () => {
      readTimers.delete(id);
      const c = conversations.value.get(id);
      if (!c || !c.lastSeq || num(c.readSeq) >= num(c.lastSeq)) return;
      if (activeId.value !== id || document.visibilityState !== "visible") return;
      const seq = c.lastSeq;
      const before = { readSeq: c.readSeq, unreadCount: c.unreadCount };
      updateConversation(id, (x) => ({ ...x, readSeq: seq, unreadCount: "0" }));
      try {
        const r = await api.post<{ readSeq?: string; unreadCount?: string }>(`/v1/conversations/${enc(id)}/read`, { seq });
        updateConversation(id, (x) => ({ ...x, unreadCount: r.unreadCount ?? "0" }));
      } catch {
        // Not stored: put the position back (unless it moved meanwhile) and try again.
        updateConversation(id, (x) => (x.readSeq === seq ? { ...x, ...before } : x));
        setTimeout(() => markRead(id), 2000);
      }
    }, 250),
  );
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && activeId.value) markRead(activeId.value);
});

// --------------------------------------------------------------- sending

/** Sends through the session when connected; set by the WebSocket session. */
export let transport: { send(p: Pending): boolean } = { send: () => false };
export function setTransport(t: typeof transport) {
  transport = t;
}

function newClientMsgId(): string {
  const r = crypto.getRandomValues(new Uint32Array(2));
  return `w-${Date.now().toString(36)}-${r[0].toString(36)}${r[1].toString(36)}`;
}

export function sendMessage(conversationId: string, body: MessageBody, replyTo?: Msg) {
  const p: Pending = {
    clientMsgId: newClientMsgId(),
    conversationId,
    body,
    replyToSeq: replyTo?.seq,
    replyTo,
    status: "sending",
    createdAtMs: Date.now(),
  };
  pending.value = [...pending.value, p];
  transport.send(p);
}

/** Sends a failed message again, with the same client message id. */
export function retrySend(clientMsgId: string) {
  const p = pending.value.find((x) => x.clientMsgId === clientMsgId);
  if (!p) return;
  const again = { ...p, status: "sending" as const, error: undefined };
  pending.value = pending.value.map((x) => (x.clientMsgId === clientMsgId ? again : x));
  transport.send(again);
}

export function sendAcked(p: Pending, ack: SendAck) {
  receiveMessage(
    {
      id: ack.messageId,
      conversationId: ack.conversationId,
      seq: ack.seq,
      senderId: myId.value,
      senderDeviceId: session.value?.deviceId,
      clientMsgId: ack.clientMsgId,
      body: p.body,
      serverTsMs: ack.serverTsMs,
      recallUntilMs: ack.recallUntilMs,
      replyTo: p.replyTo
        ? { seq: p.replyTo.seq, messageId: p.replyTo.id, senderId: p.replyTo.senderId, preview: previewOf(p.replyTo) }
        : undefined,
    },
    true,
  );
}

export function sendFailed(clientMsgId: string, error: string) {
  pending.value = pending.value.map((x) => (x.clientMsgId === clientMsgId ? { ...x, status: "failed", error } : x));
}

/** A short text for a message (list previews, quotes). */
export function previewOf(m: Message | undefined, kinds?: Record<string, string>): string {
  const b = m?.body;
  if (!b) return "";
  if (b.text) return b.text.text;
  if (b.file) return `${kinds?.file ?? "[file]"} ${b.file.name}`;
  if (b.location) return `${kinds?.location ?? "[location]"} ${b.location.title ?? ""}`;
  for (const k of ["image", "voice", "video"] as const) if (b[k]) return kinds?.[k] ?? `[${k}]`;
  return "";
}

// --------------------------------------------------------------- social

let socialLoads = 0;

/** Reads friends, requests and blocks; a load started later wins over an earlier one. */
export async function loadSocial() {
  const load = ++socialLoads;
  const [fr, inc, out, bl] = await Promise.all([
    api.get<{ friends?: Friend[] }>("/v1/friends"),
    api.get<{ requests?: FriendRequest[] }>("/v1/friends/requests?direction=incoming"),
    api.get<{ requests?: FriendRequest[] }>("/v1/friends/requests?direction=outgoing"),
    api.get<{ users?: Profile[] }>("/v1/blocks"),
  ]);
  if (load !== socialLoads) return;
  batch(() => {
    const map = new Map<string, Friend>();
    const pres = new Map(presence.value);
    for (const f of fr.friends ?? []) {
      map.set(f.profile.userId, f);
      if (f.presence) pres.set(f.profile.userId, { online: !!f.presence.online, lastSeenMs: num(f.presence.lastSeenMs) });
    }
    friends.value = map;
    presence.value = pres;
    requestsIn.value = inc.requests ?? [];
    requestsOut.value = out.requests ?? [];
    blocked.value = bl.users ?? [];
  });
}

export async function refreshPresence(ids: string[]) {
  const list = ids.filter((id) => friends.value.has(id));
  if (!list.length) return;
  try {
    const r = await api.get<{ users?: { userId: string; online?: boolean; lastSeenMs?: string }[] }>(
      `/v1/presence?user_ids=${list.map(enc).join(",")}`,
    );
    const next = new Map(presence.value);
    for (const u of r.users ?? []) next.set(u.userId, { online: !!u.online, lastSeenMs: num(u.lastSeenMs) });
    presence.value = next;
  } catch {
    /* presence is best effort */
  }
}

// ---------------------------------------------------------------- groups

export async function loadGroups() {
  const r = await api.get<{ groups?: Group[] }>("/v1/groups");
  const map = new Map<string, Group>();
  for (const g of r.groups ?? []) map.set(g.id, g);
  groups.value = map;
}

export async function loadGroup(id: string) {
  try {
    const g = await api.get<Group>(`/v1/groups/${enc(id)}`);
    setMap(groups, id, g);
    if (formerGroups.value.has(g.conversationId)) {
      const next = new Set(formerGroups.value);
      next.delete(g.conversationId);
      formerGroups.value = next;
    }
  } catch (e) {
    if (e instanceof ApiError && (e.status === 403 || e.status === 404)) {
      const next = new Set(formerGroups.value);
      next.add(`g:${id}`);
      formerGroups.value = next;
      setMap(groups, id, undefined);
    } else throw e;
  }
}

export async function loadMembers(id: string) {
  const all: Member[] = [];
  let after = "";
  for (let page = 0; page < 10; page++) {
    const r = await api.get<{ members?: Member[]; hasMore?: boolean }>(
      `/v1/groups/${enc(id)}/members?limit=500${after ? `&after_user_id=${enc(after)}` : ""}`,
    );
    all.push(...(r.members ?? []));
    if (!r.hasMore || !all.length) break;
    after = all[all.length - 1].userId;
  }
  setMap(groupMembers, id, all);
  ensureProfiles(all.map((m) => m.userId));
}

// ---------------------------------------------------------------- session

export async function loadEverything() {
  const [profile] = await Promise.all([
    api.get<Profile>("/v1/profile"),
    loadSocial(),
    loadGroups(),
    loadConversations(),
  ]);
  me.value = profile;
}

/** After `resyncRequired`: forget the cached history and read it all again. */
export async function resync() {
  timelines.value = new Map();
  await loadEverything();
  if (activeId.value) await loadLatest(activeId.value);
}

export function clearState() {
  batch(() => {
    me.value = null;
    conversations.value = new Map();
    editedAt.clear();
    timelines.value = new Map();
    pending.value = [];
    profiles.value = new Map();
    friends.value = new Map();
    requestsIn.value = [];
    requestsOut.value = [];
    blocked.value = [];
    groups.value = new Map();
    groupMembers.value = new Map();
    formerGroups.value = new Set();
    presence.value = new Map();
    typing.value = new Map();
    activeId.value = null;
    contactId.value = null;
    pane.value = "list";
    tab.value = "chats";
    detailsOpen.value = false;
  });
}

export function signedIn(s: Session, username: string) {
  saveSession(s);
  localStorage.setItem(`natter.device.${username.toLowerCase()}`, s.deviceId);
  session.value = s;
}

export async function logout() {
  try {
    await api.logout();
  } catch {
    /* logged out locally in any case */
  }
  endSession();
}

export function endSession() {
  saveSession(null);
  localStorage.removeItem("natter.cursor");
  clearState();
  session.value = null;
}

setSessionLostHandler(() => {
  if (session.value) {
    endSession();
  }
});

// Another tab logged in or out: follow it.
window.addEventListener("storage", (e) => {
  if (e.key !== "natter.session") return;
  const s = loadSession();
  if (!s && session.value) {
    clearState();
    session.value = null;
  } else if (s && s.userId !== session.value?.userId) {
    clearState();
    session.value = s;
  }
});

export function reportError(e: unknown) {
  if (e instanceof ApiError) {
    if (e.code === "session") return;
    showToast(errorText(e), true);
  } else {
    console.error(e);
  }
}

/** Set by the i18n layer: the readable text of an error. */
export let errorText: (e: ApiError) => string = (e) => e.message;
export function setErrorText(f: typeof errorText) {
  errorText = f;
}
