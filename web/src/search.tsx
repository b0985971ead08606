// Search from the chat list: my chats and groups by name (pinyin too),
// people, and my messages with the words that matched marked; a message
// opens its chat at that message.
import { useEffect, useState } from "preact/hooks";
import { api, enc } from "./api";
import { errorMessage } from "./errors";
import { formatTime, t } from "./i18n";
import {
  contactId, conversations, conversationTitle, displayName, friends, jumpTo, openConversation, openDirect, pane,
  previewOf, reportError, sortedConversations,
} from "./state";
import type { Conversation, Message, Profile } from "./types";
import { Avatar } from "./ui";

interface ConversationHit { conversationId: string; group?: { groupId: string; name?: string }; peer?: Profile }
interface MessageHit { message: Message; snippet?: string; highlights?: { start?: number; end?: number }[] }

const PAGE = 20;

/** Waits until typing pauses before asking the server. */
function useSettled(value: string, ms: number): string {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

export function SearchResults({ query }: { query: string }) {
  const s = t();
  const q = useSettled(query.trim(), 250);
  const [order, setOrder] = useState<"relevance" | "time">("relevance");
  const [chats, setChats] = useState<ConversationHit[]>([]);
  const [people, setPeople] = useState<Profile[]>([]);
  const [hits, setHits] = useState<MessageHit[] | null>(null);
  const [cursor, setCursor] = useState("");
  const [failure, setFailure] = useState("");
  const [loading, setLoading] = useState(false);

  const messagesUrl = (after: string) =>
    `/v1/search/messages?q=${enc(q)}&limit=${PAGE}&order=${order}${after ? `&cursor=${enc(after)}` : ""}`;

  useEffect(() => {
    if (!q) return;
    let live = true;
    setHits(null);
    setFailure("");
    setLoading(true);
    api.get<{ hits?: ConversationHit[] }>(`/v1/search/conversations?q=${enc(q)}&limit=10`)
      .then((r) => live && setChats(r.hits ?? []), () => live && setChats([]));
    api.get<{ users?: Profile[] }>(`/v1/users/search?q=${enc(q)}&limit=10`)
      .then((r) => live && setPeople(r.users ?? []), () => live && setPeople([]));
    api.get<{ hits?: MessageHit[]; nextCursor?: string }>(messagesUrl(""))
      .then((r) => {
        if (!live) return;
        setHits(r.hits ?? []);
        setCursor(r.nextCursor ?? "");
      }, (e) => {
        if (!live) return;
        setHits([]);
        setCursor("");
        setFailure(errorMessage(e));
      })
      .finally(() => live && setLoading(false));
    return () => { live = false; };
  }, [q, order]);

  const more = async () => {
    try {
      const r = await api.get<{ hits?: MessageHit[]; nextCursor?: string }>(messagesUrl(cursor));
      setHits([...(hits ?? []), ...(r.hits ?? [])]);
      setCursor(r.nextCursor ?? "");
    } catch (e) {
      reportError(e);
    }
  };

  // Chats: what the list already holds whose title matches, then what the
  // server found by name or pinyin.
  const lower = query.trim().toLowerCase();
  const local = sortedConversations.value.filter((c) => conversationTitle(c).toLowerCase().includes(lower));
  const seen = new Set(local.map((c) => c.id));
  const found = chats.filter((h) => !seen.has(h.conversationId));
  const strangers = people.filter((p) => !friends.value.has(p.userId));

  return (
    <div class="list search-results" aria-busy={loading}>
      {local.length + found.length > 0 && <section aria-label={s.searchChatsHeading}>
        <div class="group-label">{s.searchChatsHeading}</div>
        {local.slice(0, 10).map((c) => <ChatRow key={c.id} id={c.id} title={conversationTitle(c)} c={c} />)}
        {found.map((h) => (
          <ChatRow
            key={h.conversationId}
            id={h.conversationId}
            title={h.group?.name || h.peer?.nickname || h.peer?.username || displayName(h.peer?.userId ?? "")}
            peer={h.peer?.userId}
          />
        ))}
      </section>}
      {strangers.length > 0 && (
        <section aria-label={s.searchPeopleHeading}>
          <div class="group-label">{s.searchPeopleHeading}</div>
          {strangers.map((p) => (
            <button class="contact" key={p.userId} onClick={() => { contactId.value = p.userId; pane.value = "chat"; }}>
              <Avatar id={p.userId} name={p.nickname || p.username || ""} size={38} />
              <span class="info"><strong>{p.nickname || p.username}</strong><small>@{p.username}</small></span>
            </button>
          ))}
        </section>
      )}
      <section aria-label={s.searchMessagesHeading}>
        <div class="group-label search-head">
          {s.searchMessagesHeading}
          <span class="order" role="group" aria-label={s.searchOrder}>
            <button aria-pressed={order === "relevance"} onClick={() => setOrder("relevance")}>{s.bestMatch}</button>
            <button aria-pressed={order === "time"} onClick={() => setOrder("time")}>{s.newest}</button>
          </span>
        </div>
        {failure && <p class="list-empty" role="alert">{failure}</p>}
        {hits && hits.length === 0 && !failure && <p class="list-empty">{s.noMessagesFound}</p>}
        <div role="list">{hits?.map((h) => <MessageRow key={h.message.id} h={h} />)}</div>
        {cursor && <button class="btn small secondary more" onClick={more}>{s.moreResults}</button>}
      </section>
    </div>
  );
}

function ChatRow({ id, title, c, peer }: { id: string; title: string; c?: Conversation; peer?: string }) {
  const open = () => {
    if (!conversations.value.has(id) && peer) openDirect(peer);
    else openConversation(id);
  };
  return (
    <button class="contact" aria-label={title} onClick={open}>
      <Avatar id={c?.peerUserId ?? peer ?? id} name={title} size={38} />
      <span class="info"><strong>{title}</strong></span>
    </button>
  );
}

function MessageRow({ h }: { h: MessageHit }) {
  const s = t();
  const m = h.message;
  const c = conversations.value.get(m.conversationId);
  const where = c ? conversationTitle(c) : displayName(m.senderId ?? "");
  const who = displayName(m.senderId ?? "");
  // The pages around the message first, so opening the chat does not load
  // its latest page over them.
  const open = () =>
    jumpTo(m.conversationId, m.seq).then(() => openConversation(m.conversationId), reportError);
  return (
    <button class="contact hit" aria-label={`${where}: ${h.snippet || previewOf(m, s.kinds)}`} onClick={open}>
      <Avatar id={m.senderId ?? ""} name={who} size={38} />
      <span class="info">
        <span class="hit-top">
          <strong>{where}</strong>
          <span class="conv-time">{formatTime(Number(m.serverTsMs ?? 0), true)}</span>
        </span>
        <small>
          {where !== who && `${who}: `}
          <Marked text={h.snippet || previewOf(m, s.kinds)} marks={h.highlights ?? []} />
        </small>
      </span>
    </button>
  );
}

/** The snippet with its matched words in <mark>; offsets count Unicode characters. */
export function Marked({ text, marks }: { text: string; marks: { start?: number; end?: number }[] }) {
  const chars = Array.from(text);
  const parts: (string | preact.JSX.Element)[] = [];
  let at = 0;
  for (const [i, mk] of [...marks].sort((a, b) => (a.start ?? 0) - (b.start ?? 0)).entries()) {
    const start = Math.max(at, mk.start ?? 0);
    const end = Math.min(chars.length, mk.end ?? 0);
    if (end <= start) continue;
    parts.push(chars.slice(at, start).join(""));
    parts.push(<mark key={i}>{chars.slice(start, end).join("")}</mark>);
    at = end;
  }
  parts.push(chars.slice(at).join(""));
  return <>{parts}</>;
}
