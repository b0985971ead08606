// The chat view: header, the message list and the composer.
//
// The list is windowed: of the messages loaded for a conversation, at most
// MAX are in the DOM. Scrolling up widens the window upwards (and reads older
// pages from the server at its top), scrolling down widens it downwards; the
// far side is dropped. The scroll position is kept on an anchor message
// across every change, so a conversation of any length scrolls smoothly.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { api, enc } from "./api";
import { formatDay, formatLastSeen, formatTime, t } from "./i18n";
import {
  conversations, detailsOpen, displayName, formerGroups, groupIdOf, groupMembers, groups, highlight, jumpTo, loadLatest,
  loadNewer, loadOlder, myId, pane, peerOf, pending, presence, previewOf, reportError, retrySend, sendMessage, timelines,
  transcribe, transcripts, typing, updateConversation, type Msg, type Pending, conversationTitle,
} from "./state";
import { sendTyping } from "./ws";
import type { Conversation, Message } from "./types";
import { attempt, Avatar, Icon, Menu, Modal, RichText, type MenuItem } from "./ui";
import { uploads } from "./files";
import { FileCard, ImageBody, sendFiles, UploadRow, VideoBody, Viewer, VoiceBody, VoiceButton } from "./media";

type Reads = { m: Msg; readers: string[]; count: number; total: number };
/** How often an open read-by list is fetched again. */
const READS_REFRESH_MS = 2000;

const WINDOW = 80;
const STEP = 40;
const MAX = 160;

/** The sentence of a group notice. */
export function systemText(m: Message): string {
  const sys = m.body?.system;
  if (!sys) return "";
  const s = t();
  const name = (id: string, you: string) => (id === myId.value ? you : displayName(id));
  const actor = name(sys.actorId || m.senderId || "", s.you);
  const users = (sys.userIds ?? []).map((u) => name(u, s.youObject)).join(lang_sep());
  const f = s.sys[sys.kind];
  return f ? f(actor, users, sys.text ?? "") : `[${sys.kind}]`;
}

function lang_sep() {
  return t().you === "你" ? "、" : ", ";
}

export function ChatView({ id }: { id: string }) {
  const s = t();
  const c = conversations.value.get(id);
  // Files dragged over the chat (a counter: dragenter and dragleave come
  // for every child crossed).
  const [dragging, setDragging] = useState(0);
  if (!c) return <div class="empty-main">{s.selectChat}</div>;
  const carriesFiles = (e: DragEvent) => !!e.dataTransfer?.types.includes("Files");
  const canSend = !groupIdOf(id) || !formerGroups.value.has(id);
  return (
    <section class="main" aria-label={conversationTitle(c)}
      onDragEnter={(e) => carriesFiles(e) && canSend && setDragging((n) => n + 1)}
      onDragLeave={(e) => carriesFiles(e) && setDragging((n) => Math.max(0, n - 1))}
      onDragOver={(e) => carriesFiles(e) && canSend && e.preventDefault()}
      onDrop={(e) => {
        if (!carriesFiles(e)) return;
        e.preventDefault();
        setDragging(0);
        if (canSend) sendFiles(id, [...(e.dataTransfer?.files ?? [])]).catch(reportError);
      }}>
      <ChatHeader c={c} />
      <MessageList key={id} c={c} />
      <Composer key={`composer-${id}`} c={c} />
      {dragging > 0 && <div class="drop-zone" aria-hidden="true">{s.dropHere}</div>}
    </section>
  );
}

function ChatHeader({ c }: { c: Conversation }) {
  const s = t();
  const [menu, setMenu] = useState<{ x: number; y: number } | null>(null);
  const title = conversationTitle(c);
  const peer = c.peerUserId ?? peerOf(c.id);
  const gid = groupIdOf(c.id);
  const group = gid ? groups.value.get(gid) : undefined;
  const typers = [...(typing.value.get(c.id)?.entries() ?? [])].filter(([, until]) => until > Date.now()).map(([u]) => u);
  let status = "";
  let cls = "status";
  if (typers.length) {
    status = s.typing(typers.map(displayName).join(", "));
    cls += " typing";
  } else if (peer) {
    const p = presence.value.get(peer);
    status = p?.online ? s.online : p ? formatLastSeen(p.lastSeenMs) : "";
    if (p?.online) cls += " online";
  } else if (group) status = s.members(group.memberCount ?? 0);
  const toggleDetails = () => {
    if (matchMedia("(max-width: 760px)").matches) pane.value = "details";
    else detailsOpen.value = !detailsOpen.value;
  };
  const setFlag = (body: { pinned?: boolean; muted?: boolean }) =>
    attempt(() => api.patch(`/v1/conversations/${enc(c.id)}/settings`, body).then((r: any) =>
      updateConversation(c.id, (x) => ({ ...x, pinned: !!r.pinned, muted: !!r.muted })),
    ), reportError);
  return (
    <header class="chat-head">
      <button class="icon-btn back-btn" aria-label={s.back} onClick={() => (pane.value = "list")}><Icon name="back" /></button>
      <Avatar id={gid ?? peer ?? c.id} name={title} size={40} online={!!peer && !!presence.value.get(peer)?.online} />
      <button class="title" onClick={toggleDetails} aria-label={`${s.details}: ${title}`}>
        <strong>{title}</strong>
        <span class={cls} aria-live="polite">{status}</span>
      </button>
      {c.lastSeq && (
        <button class="icon-btn" aria-label={s.chatMenu} aria-haspopup="menu" onClick={(e) => { const r = (e.currentTarget as HTMLElement).getBoundingClientRect(); setMenu({ x: r.right - 180, y: r.bottom + 4 }); }}>
          <Icon name="more" />
        </button>
      )}
      <button class="icon-btn" aria-label={s.details} aria-pressed={detailsOpen.value} onClick={toggleDetails}><Icon name="info" /></button>
      {menu && (
        <Menu x={menu.x} y={menu.y} label={s.chatMenu} onClose={() => setMenu(null)} items={[
          { label: c.pinned ? s.unpin : s.pin, onSelect: () => setFlag({ pinned: !c.pinned }) },
          { label: c.muted ? s.unmute : s.mute, onSelect: () => setFlag({ muted: !c.muted }) },
        ]} />
      )}
    </header>
  );
}

type Item =
  | { kind: "day"; key: string; label: string }
  | { kind: "msg"; key: string; m: Msg; first: boolean; last: boolean }
  | { kind: "pending"; key: string; p: Pending };

function MessageList({ c }: { c: Conversation }) {
  const s = t();
  const id = c.id;
  const tl = timelines.value.get(id);
  const msgs = tl?.msgs ?? [];
  const scroller = useRef<HTMLDivElement>(null);
  // `atEnd`: the window shown reaches the latest message.
  const win = useRef({ start: 0, end: 0, first: "", len: 0, epoch: -1, atEnd: false });
  const stick = useRef(true);
  const anchor = useRef<{ key: string; offset: number } | null>(null);
  /** The scroll position the view last took in (-1: none yet). */
  const seenTop = useRef(-1);
  /** The messages the edges were last looked at with (see the layout effect). */
  const checked = useRef<Msg[] | null>(null);
  const [, rerender] = useState(0);
  const [menu, setMenu] = useState<{ x: number; y: number; m: Msg } | null>(null);
  const [reads, setReads] = useState<Reads | null>(null);
  const fetchReads = async (m: Msg): Promise<Reads> => {
    const r = await api.get<{ readCount?: number; memberCount?: number; readerIds?: string[] }>(`/v1/conversations/${enc(id)}/messages/${m.seq}/reads`);
    return { m, readers: r.readerIds ?? [], count: r.readCount ?? 0, total: r.memberCount ?? 0 };
  };
  // The read-by list stays current while it is open.
  useEffect(() => {
    if (!reads) return;
    const seq = reads.m.seq;
    const timer = setInterval(() => {
      fetchReads(reads.m).then(
        (next) => setReads((cur) => (cur && cur.m.seq === seq ? next : cur)),
        () => {},
      );
    }, READS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [reads?.m.seq, id]);
  const [flash, setFlash] = useState<string | null>(null);
  const setReply = (m: Msg) => replyTarget.set(id, m);

  const w = win.current;

  const findAnchor = () => {
    const el = scroller.current;
    if (!el) return;
    const top = el.scrollTop;
    seenTop.current = top;
    for (const child of el.querySelectorAll<HTMLElement>("[data-key]")) {
      if (child.offsetTop + child.offsetHeight > top) {
        anchor.current = { key: child.dataset.key!, offset: child.offsetTop - top };
        return;
      }
    }
  };

  /** Takes in where the list is scrolled to: follow the end, or keep a message in place. */
  const noteScroll = () => {
    const el = scroller.current;
    if (!el) return;
    const fromBottom = el.scrollHeight - el.scrollTop - el.clientHeight;
    stick.current = fromBottom < 40 && w.atEnd;
    findAnchor();
  };

  // A scroll whose event has not come yet (scroll events come with the next
  // frame; this render may run first, for a message or a read mark): take
  // it in now, while the list is as the user saw it. Else the layout effect
  // puts the old position back (the bottom, when following the end) and the
  // event, when it comes, finds the list there: the scroll is lost, and a
  // scroll to the top loads nothing.
  if (scroller.current && scroller.current.scrollTop !== seenTop.current) noteScroll();

  // Keep the window's indices on the same messages as the list changes:
  // a page read at the top shifts them; messages appended at the end are
  // followed when the window reached the end.
  let before = w.len;
  if (tl && w.epoch !== tl.epoch) {
    w.epoch = tl.epoch;
    w.end = msgs.length;
    w.start = Math.max(0, w.end - WINDOW);
    stick.current = !highlight.value;
    before = msgs.length;
  } else if (msgs.length && msgs[0].seq !== w.first) {
    const shift = msgs.findIndex((m) => m.seq === w.first);
    if (shift > 0) {
      w.start = Math.max(0, w.start + shift - STEP);
      w.end = Math.min(w.end + shift, w.start + MAX);
      before += shift;
    } else {
      w.start = Math.max(0, msgs.length - WINDOW);
      w.end = msgs.length;
      before = msgs.length;
    }
  }
  if (msgs.length > before && w.end >= before) {
    w.end = msgs.length;
    if (stick.current) w.start = Math.max(w.start, w.end - MAX);
  }
  w.end = Math.min(w.end, msgs.length);
  w.start = Math.max(0, Math.min(w.start, w.end));
  w.first = msgs[0]?.seq ?? "";
  w.len = msgs.length;

  const shown = msgs.slice(w.start, w.end);
  const atEnd = w.end >= msgs.length && !!tl?.atLatest;
  w.atEnd = atEnd;
  const mine = pending.value.filter((p) => p.conversationId === id);
  const items: Item[] = [];
  let prevDay = "";
  let prev: Msg | undefined;
  shown.forEach((m, i) => {
    const ts = Number(m.serverTsMs ?? 0);
    const day = new Date(ts).toDateString();
    if (day !== prevDay) {
      items.push({ kind: "day", key: `day-${m.seq}`, label: formatDay(ts) });
      prevDay = day;
      prev = undefined;
    }
    const next = shown[i + 1];
    const sameAsPrev = prev && !prev.body?.system && prev.senderId === m.senderId && ts - Number(prev.serverTsMs ?? 0) < 300_000;
    const sameAsNext = next && !next.body?.system && next.senderId === m.senderId && Number(next.serverTsMs ?? 0) - ts < 300_000 && new Date(Number(next.serverTsMs ?? 0)).toDateString() === day;
    items.push({ kind: "msg", key: m.seq, m, first: !sameAsPrev, last: !sameAsNext });
    prev = m;
  });
  if (atEnd) for (const p of mine) items.push({ kind: "pending", key: `p-${p.clientMsgId}`, p });

  /** At an edge of the window with more beyond it: widen the window, or read a page. */
  const reachEdges = () => {
    const el = scroller.current;
    if (!el) return;
    const fromBottom = el.scrollHeight - el.scrollTop - el.clientHeight;
    if (el.scrollTop < 400 && (w.start > 0 || tl?.hasOlder)) {
      if (w.start > 0) {
        w.start = Math.max(0, w.start - STEP);
        w.end = Math.min(w.end, w.start + MAX);
        rerender((n) => n + 1);
      } else if (tl && !tl.loading) {
        loadOlder(id).catch(reportError);
      }
    } else if (fromBottom < 400) {
      if (w.end < msgs.length) {
        w.end = Math.min(msgs.length, w.end + STEP);
        w.start = Math.max(w.start, w.end - MAX);
        rerender((n) => n + 1);
      } else if (tl && !tl.atLatest && !tl.loading) {
        loadNewer(id).catch(reportError);
      }
    }
  };

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (stick.current) el.scrollTop = el.scrollHeight;
    else if (anchor.current) {
      const a = el.querySelector<HTMLElement>(`[data-key="${CSS.escape(anchor.current.key)}"]`);
      if (a) el.scrollTop = a.offsetTop - anchor.current.offset;
    }
    findAnchor();
    // Only a scroll looks at the edges, and none comes while the view stays
    // where it is: a scroll that reached the top while a page was loading
    // (older, or newer to fill a gap) got nothing then, and a list that
    // does not fill the view cannot be scrolled at all. So once the messages
    // change and nothing is loading, look again (not while a jump is about
    // to move the view; a load that failed changes nothing, so it is not
    // tried again and again).
    const jumping = highlight.value?.conversationId === id;
    if (tl && !tl.loading && !jumping && checked.current !== msgs) {
      checked.current = msgs;
      reachEdges();
    }
  });

  // A jump (a quote clicked): put the message in the window and show it.
  useEffect(() => {
    const h = highlight.value;
    if (!h || h.conversationId !== id) return;
    const i = msgs.findIndex((m) => m.seq === h.seq);
    if (i < 0) return;
    if (i < w.start || i >= w.end) {
      w.start = Math.max(0, i - WINDOW / 2);
      w.end = Math.min(msgs.length, i + WINDOW / 2);
      stick.current = false;
      rerender((n) => n + 1);
      return;
    }
    const el = scroller.current?.querySelector<HTMLElement>(`[data-key="${CSS.escape(h.seq)}"]`);
    if (el) {
      stick.current = false;
      el.scrollIntoView({ block: "center" });
      findAnchor();
      setFlash(h.seq);
      setTimeout(() => setFlash(null), 1700);
      highlight.value = null;
    }
  });

  const onScroll = () => {
    noteScroll();
    reachEdges();
  };

  const toLatest = () => {
    stick.current = true;
    if (tl && !tl.atLatest) loadLatest(id).catch(reportError);
    else {
      w.end = msgs.length;
      w.start = Math.max(0, w.end - WINDOW);
      rerender((n) => n + 1);
    }
  };

  const isGroup = c.kind === "group";
  const group = isGroup ? groups.value.get(groupIdOf(id) ?? "") : undefined;
  // The owner recalls anyone's message, an admin a plain member's (the
  // server decides; this only keeps the menu honest).
  const myRole = group?.me?.role;
  const roleOf = (userId: string) =>
    userId === group?.ownerId ? "owner" : groupMembers.value.get(group?.id ?? "")?.find((x) => x.userId === userId)?.role ?? "member";
  const canModerate = (m: Msg) => myRole === "owner" || (myRole === "admin" && (m.senderId === myId.value || roleOf(m.senderId ?? "") === "member"));
  const menuItems = (m: Msg): MenuItem[] => {
    const items: MenuItem[] = [];
    const live = !m.body?.recalled && !m.body?.system;
    if (live && !formerGroups.value.has(id)) items.push({ label: s.reply, onSelect: () => setReply(m) });
    if (live && m.body?.voice && !m.body.voice.transcript && !transcripts.value.has(`${m.conversationId}:${m.seq}`)) {
      items.push({ label: s.transcribe, onSelect: () => attempt(() => transcribe(m), reportError) });
    }
    const own = m.senderId === myId.value;
    if (live && ((own && Date.now() < Number(m.recallUntilMs ?? 0)) || canModerate(m))) {
      items.push({ label: s.recall, danger: true, onSelect: () => attempt(() => api.post(`/v1/conversations/${enc(id)}/messages/${m.seq}/recall`), reportError) });
    }
    if (isGroup && own && live) {
      items.push({
        label: s.readBy,
        onSelect: () => attempt(async () => setReads(await fetchReads(m)), reportError),
      });
    }
    items.push({ label: s.deleteForMe, danger: true, onSelect: () => attempt(() => api.post(`/v1/conversations/${enc(id)}/messages/delete`, { seqs: [m.seq] }), reportError) });
    return items;
  };

  return (
    <div class="chat-wrap">
      <div class="messages" ref={scroller} onScroll={onScroll} role="log" aria-label={s.messages} aria-busy={!!tl?.loading}>
        <div class="messages-inner" role="list">
          {tl && !tl.hasOlder && w.start === 0 && <div class="history-edge">{s.beginning}</div>}
          {tl?.loading && <div class="history-edge">{s.loadingOlder}</div>}
          {items.map((it) => {
            if (it.kind === "day") return <div class="day" key={it.key} role="separator">{it.label}</div>;
            if (it.kind === "pending") return <PendingRow key={it.key} p={it.p} />;
            const m = it.m;
            if (m.body?.system) return <div class="sys" key={it.key} data-key={m.seq} role="listitem">{systemText(m)}</div>;
            return (
              <MessageRow key={it.key} m={m} c={c} showName={isGroup && it.first} showAvatar={isGroup && it.first} flash={flash === m.seq}
                onMenu={(x, y) => setMenu({ x, y, m })} />
            );
          })}
          {uploads.value.filter((u) => u.conversationId === id).map((u) => <UploadRow key={u.id} u={u} />)}
        </div>
      </div>
      <Viewer />
      {!(stick.current || atEnd && w.end >= msgs.length) || (tl && !tl.atLatest) ? (
        <button class="btn small jump-latest" onClick={toLatest}>{s.jumpToLatest} ↓</button>
      ) : null}
      {menu && <Menu x={menu.x} y={menu.y} label={s.messageMenu} items={menuItems(menu.m)} onClose={() => setMenu(null)} />}
      {reads && (
        <Modal title={`${s.readBy} (${reads.count}/${reads.total})`} onClose={() => setReads(null)} foot={<button class="btn" onClick={() => setReads(null)}>{s.close}</button>}>
          {reads.readers.map((u) => (
            <div class="member" key={u}><Avatar id={u} name={displayName(u)} size={30} /><span class="name">{displayName(u)}</span></div>
          ))}
        </Modal>
      )}
    </div>
  );
}

function MessageRow({ m, c, showName, showAvatar, flash, onMenu }: { m: Msg; c: Conversation; showName: boolean; showAvatar: boolean; flash: boolean; onMenu: (x: number, y: number) => void }) {
  const s = t();
  const mine = m.senderId === myId.value;
  const ts = Number(m.serverTsMs ?? 0);
  const read = mine && c.kind === "direct" && Number(c.peerReadSeq ?? 0) >= Number(m.seq);
  const openMenu = (e: MouseEvent) => {
    e.preventDefault();
    const r = (e.currentTarget as HTMLElement).getBoundingClientRect();
    onMenu(e.type === "contextmenu" ? e.clientX : r.left, e.type === "contextmenu" ? e.clientY : r.bottom + 4);
  };
  return (
    <div class={`row ${mine ? "mine" : ""} ${flash ? "flash" : ""}`} data-key={m.seq} role="listitem" onContextMenu={openMenu}>
      {c.kind === "group" && !mine && (
        <span class="avatar-slot">{showAvatar && <Avatar id={m.senderId ?? ""} name={displayName(m.senderId)} size={34} />}</span>
      )}
      <div class="bubble">
        {showName && !mine && <div class="sender">{displayName(m.senderId)}</div>}
        {m.replyTo && !m.body?.recalled && <QuoteButton c={c} q={m.replyTo} />}
        <Body m={m} />
        <span class={`meta ${read ? "read" : ""}`} title={new Date(ts).toLocaleString()}>
          {formatTime(ts)}
          {mine && !m.body?.recalled && (
            <span role="img" aria-label={read ? s.read : s.sent} title={read ? s.read : s.sent}>
              <Icon name={read ? "checks" : "check"} />
            </span>
          )}
        </span>
      </div>
      <button class="icon-btn msg-menu-btn" aria-label={s.messageMenu} aria-haspopup="menu" onClick={openMenu}><Icon name="more" /></button>
    </div>
  );
}

function QuoteButton({ c, q }: { c: Conversation; q: NonNullable<Message["replyTo"]> }) {
  const s = t();
  const name = displayName(q.senderId);
  return (
    <button class="quote" aria-label={`${s.replyingTo} ${name}: ${q.preview ?? ""}`} onClick={() => q.seq && jumpTo(c.id, q.seq).catch(reportError)}>
      <strong>{name}</strong>
      <span>{q.preview}</span>
    </button>
  );
}

function Body({ m }: { m: Msg }) {
  const s = t();
  const b = m.body;
  if (!b) return null;
  if (b.recalled) return <span class="recalled">{s.recalled}</span>;
  if (b.text) return <span class="text"><RichText text={b.text.text} /></span>;
  if (b.location) {
    const { latitude = 0, longitude = 0, title, address } = b.location;
    return <span class="attachment">📍 {title || `${latitude.toFixed(4)}, ${longitude.toFixed(4)}`}{address ? ` · ${address}` : ""}</span>;
  }
  if (m.seq !== "0") {
    if (b.image) return <ImageBody m={m} />;
    if (b.voice) return <VoiceBody m={m} />;
    if (b.video) return <VideoBody m={m} />;
    if (b.file) return <FileCard m={m} />;
  }
  return <span class="attachment">{previewOf(m, s.kinds)}</span>;
}

function PendingRow({ p }: { p: Pending }) {
  const s = t();
  const failed = p.status === "failed";
  return (
    <div class="row mine" data-key={`p-${p.clientMsgId}`} role="listitem" aria-busy={!failed}>
      <div class="bubble">
        {p.replyTo && (
          <span class="quote"><strong>{displayName(p.replyTo.senderId)}</strong><span>{previewOf(p.replyTo)}</span></span>
        )}
        <Body m={{ id: "", conversationId: p.conversationId, seq: "0", body: p.body }} />
        <span class={`meta ${failed ? "failed" : ""}`}>
          {formatTime(p.createdAtMs)}
          <span role="img" aria-label={failed ? s.failed : s.sending} title={failed ? s.failed : s.sending}>
            <Icon name={failed ? "alert" : "clock"} />
          </span>
        </span>
        {failed && (
          <div class="failed-line">
            {p.error || s.failed}
            <button class="btn small" onClick={() => retrySend(p.clientMsgId)}>{s.retry}</button>
          </div>
        )}
      </div>
    </div>
  );
}

/** The message being replied to, per conversation (shared by list and composer). */
const replyTarget = {
  map: new Map<string, Msg>(),
  listeners: new Set<() => void>(),
  set(id: string, m: Msg | undefined) {
    if (m) this.map.set(id, m);
    else this.map.delete(id);
    for (const l of this.listeners) l();
  },
};

const EMOJI = ["😀", "😂", "🥹", "😊", "😍", "🤔", "😅", "😭", "😎", "🥳", "😴", "🙏", "👍", "👎", "👏", "🙌", "💪", "🤝", "👋", "❤️", "🔥", "🎉", "✨", "💯", "🌹", "☕", "🍺", "🍜", "🌞", "🌙", "⭐", "✅"];

function Composer({ c }: { c: Conversation }) {
  const s = t();
  const [text, setText] = useState("");
  const [emoji, setEmoji] = useState(false);
  const [, rerender] = useState(0);
  const area = useRef<HTMLTextAreaElement>(null);
  const picker = useRef<HTMLInputElement>(null);
  const lastTyping = useRef(0);
  useEffect(() => {
    const l = () => rerender((n) => n + 1);
    replyTarget.listeners.add(l);
    return () => {
      replyTarget.listeners.delete(l);
    };
  }, []);
  useEffect(() => area.current?.focus(), [c.id]);
  const reply = replyTarget.map.get(c.id);
  useEffect(() => {
    if (reply) area.current?.focus();
  }, [reply]);

  const gid = groupIdOf(c.id);
  const group = gid ? groups.value.get(gid) : undefined;
  if (gid && formerGroups.value.has(c.id)) return <div class="composer"><p class="composer-note">{s.notMember}</p></div>;
  const role = group?.me?.role;
  const mutedUntil = Number(group?.me?.mutedUntilMs ?? 0);
  if (group && mutedUntil > Date.now()) return <div class="composer"><p class="composer-note">{s.youAreMuted}</p></div>;
  if (group?.mutedAll && role === "member") return <div class="composer"><p class="composer-note">{s.groupMuted}</p></div>;

  const submit = () => {
    const body = text.trim();
    if (!body) return;
    sendMessage(c.id, { text: { text: text.replace(/^\n+|\s+$/g, "") } }, reply);
    replyTarget.set(c.id, undefined);
    setText("");
    setEmoji(false);
    if (area.current) area.current.style.height = "";
    area.current?.focus();
    const el = area.current?.closest(".main")?.querySelector<HTMLElement>(".messages");
    if (el) requestAnimationFrame(() => (el.scrollTop = el.scrollHeight));
  };
  const sendPicked = (files: File[]) => {
    if (files.length === 0) return;
    sendFiles(c.id, files, reply).catch(reportError);
    replyTarget.set(c.id, undefined);
  };
  const onPick = (e: Event) => {
    const input = e.currentTarget as HTMLInputElement;
    sendPicked([...(input.files ?? [])]);
    input.value = "";
  };
  const onPaste = (e: ClipboardEvent) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length > 0) {
      e.preventDefault();
      sendPicked(files);
    }
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  };
  const onInput = (e: Event) => {
    const v = (e.currentTarget as HTMLTextAreaElement).value;
    setText(v);
    const el = e.currentTarget as HTMLTextAreaElement;
    el.style.height = "auto";
    el.style.height = `${Math.min(160, el.scrollHeight + 2)}px`;
    if (v && Date.now() - lastTyping.current > 3000) {
      lastTyping.current = Date.now();
      sendTyping(c.id);
    }
  };
  return (
    <div class="composer">
      <div class="composer-inner">
        {reply && (
          <div class="reply-bar">
            <span class="quote"><strong>{s.replyingTo} {displayName(reply.senderId)}</strong><span>{previewOf(reply, s.kinds)}</span></span>
            <button class="icon-btn" aria-label={s.cancelReply} onClick={() => replyTarget.set(c.id, undefined)}><Icon name="close" /></button>
          </div>
        )}
        <div class="composer-row">
          <button class="icon-btn" aria-label={s.emoji} aria-expanded={emoji} onClick={() => setEmoji(!emoji)}><Icon name="smile" /></button>
          <button class="icon-btn" aria-label={s.attach} onClick={() => picker.current?.click()}><Icon name="attach" /></button>
          <input ref={picker} type="file" multiple hidden aria-hidden="true" tabIndex={-1} onChange={onPick} />
          <textarea ref={area} rows={1} aria-label={s.typeMessage} placeholder={s.typeMessage} value={text} onInput={onInput} onKeyDown={onKey} onPaste={onPaste} maxLength={4000} />
          {text.trim() ? (
            <button class="send-btn" aria-label={s.send} onClick={submit}><Icon name="send" /></button>
          ) : (
            <VoiceButton conversationId={c.id} />
          )}
        </div>
        {emoji && (
          <div class="emoji-pop" role="group" aria-label={s.emoji}>
            {EMOJI.map((e) => (
              <button aria-label={e} onClick={() => { setText(text + e); area.current?.focus(); }}>{e}</button>
            ))}
          </div>
        )}
      </div>
    </div>
  );
}

export function EmptyMain() {
  const s = t();
  return (
    <section class="main">
      <div class="empty-main">
        <div>
          <Icon name="chat" />
          <p>{s.selectChat}</p>
        </div>
      </div>
    </section>
  );
}

