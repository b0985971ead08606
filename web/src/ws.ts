// The WebSocket session (docs/protocol.md, "WebSocket"): resume from the
// stored cursor, apply pushes in cursor order and ack them, reconnect with
// backoff, send what is pending once caught up.
//
// The cursor lives in localStorage, so a reload or another tab of the same
// device resumes where this one stopped; it only moves forward.
import { accessToken, api, ApiError } from "./api";
import { errorMessage } from "./errors";
import {
  applyEntry, applyGroupHead, applyPresence, applyTyping, connection, loadConversations, loadEverything, loadLatest,
  activeId, pending, receiveMessage, refreshPresence, friends, resync, sendAcked, sendFailed, session, setTransport,
  type Pending,
} from "./state";
import type { ServerFrame } from "./types";

const CURSOR = "natter.cursor";

function storedCursor(): number {
  return Number(localStorage.getItem(CURSOR) ?? 0) || 0;
}

function storeCursor(c: number) {
  if (c > storedCursor()) localStorage.setItem(CURSOR, String(c));
}

export class Connection {
  private ws: WebSocket | null = null;
  private nextId = 1;
  private cursor = 0;
  private ackedCursor = 0;
  private caughtUp = false;
  private attempts = 0;
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  /** Brings a fresh access token over the socket before the current one expires. */
  private authTimer: ReturnType<typeof setTimeout> | null = null;
  private lastHeard = Date.now();
  /** Frame id -> the send it carries. */
  private sends = new Map<string, Pending>();

  constructor() {
    setTransport({ send: (p) => this.send(p) });
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
  }

  start() {
    this.stopped = false;
    this.cursor = storedCursor();
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    if (this.timer) clearTimeout(this.timer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.authTimer) clearTimeout(this.authTimer);
    this.flushAck();
    this.ws?.close(1000);
    this.ws = null;
    setTransport({ send: () => false });
  }

  private onOffline = () => {
    connection.value = "offline";
    this.ws?.close(1000);
  };

  private onOnline = () => {
    this.attempts = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.ws) this.connect();
  };

  private async connect() {
    if (this.stopped || this.ws) return;
    if (!navigator.onLine) {
      connection.value = "offline";
      return;
    }
    connection.value = "connecting";
    let token: string;
    try {
      token = await accessToken();
    } catch (e) {
      if (e instanceof ApiError && e.code === "session") return;
      return this.retry();
    }
    if (this.stopped || this.ws) return;
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws?token=${encodeURIComponent(token)}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.caughtUp = false;
    let welcomed = false;
    ws.onmessage = (ev) => {
      this.lastHeard = Date.now();
      let frame: ServerFrame;
      try {
        frame = JSON.parse(ev.data as string);
      } catch {
        return;
      }
      if (frame.welcome) welcomed = true;
      this.onFrame(ws, frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.caughtUp = false;
      // Sends in flight stay pending: they go again, same clientMsgId, after the next caughtUp.
      this.sends.clear();
      if (this.pingTimer) clearInterval(this.pingTimer);
      if (this.authTimer) clearTimeout(this.authTimer);
      if (this.stopped) return;
      connection.value = navigator.onLine ? "connecting" : "offline";
      if (!welcomed) {
        // Refused before the upgrade: maybe the token; a call refreshes it.
        api.get("/v1/profile").catch(() => {});
      }
      if (navigator.onLine) this.retry();
    };
  }

  private retry() {
    if (this.stopped || this.timer) return;
    const delay = Math.min(30_000, 500 * 2 ** this.attempts) * (0.5 + Math.random() / 2);
    this.attempts++;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  private frame(ws: WebSocket, body: Record<string, unknown>): string {
    const id = String(this.nextId++);
    ws.send(JSON.stringify({ id, ...body }));
    return id;
  }

  private onFrame(ws: WebSocket, f: ServerFrame) {
    if (f.welcome) {
      const acked = Number(f.welcome.ackedCursor ?? 0);
      this.cursor = Math.max(this.cursor, storedCursor());
      this.ackedCursor = acked;
      this.frame(ws, { resume: { cursor: String(this.cursor) } });
      this.pingTimer = setInterval(() => this.heartbeat(ws), 20_000);
      this.scheduleAuth(ws, Number(f.welcome.expiresAtMs ?? 0));
      return;
    }
    if (f.session) {
      this.scheduleAuth(ws, Number(f.session.expiresAtMs ?? 0));
      return;
    }
    if (f.push) {
      const c = Number(f.push.cursor);
      if (c <= this.cursor) return;
      this.cursor = c;
      if (f.push.entry) {
        try {
          applyEntry(f.push.entry);
        } catch (e) {
          console.error("entry", e);
        }
      }
      this.scheduleAck();
      return;
    }
    if (f.groupMessage) return receiveMessage(f.groupMessage);
    if (f.ack) {
      const p = this.sends.get(f.replyTo ?? "");
      if (p) {
        this.sends.delete(f.replyTo ?? "");
        sendAcked(p, f.ack);
      }
      return;
    }
    if (f.error) {
      const p = this.sends.get(f.replyTo ?? "");
      if (p) {
        this.sends.delete(f.replyTo ?? "");
        if (f.error.code === "unavailable" && (p.unavailable ?? 0) < 5) {
          // Stored but not yet delivered, or a service restarting: the same
          // clientMsgId again shortly.
          p.unavailable = (p.unavailable ?? 0) + 1;
          setTimeout(() => this.send(p), 1000 * p.unavailable);
        } else {
          sendFailed(p.clientMsgId, errorMessage(new ApiError(f.error.code, f.error.message)));
        }
      }
      return;
    }
    if (f.caughtUp) {
      this.caughtUp = true;
      this.attempts = 0;
      connection.value = "online";
      this.flushAck();
      this.afterResume();
      this.resendPending();
      return;
    }
    if (f.resyncRequired) {
      this.cursor = Number(f.resyncRequired.cursor ?? 0);
      localStorage.setItem(CURSOR, String(this.cursor));
      resync().catch(() => {});
      return;
    }
    if (f.groupHeads) {
      for (const h of f.groupHeads.heads ?? []) applyGroupHead(h.conversationId, h.lastSeq);
      return;
    }
    if (f.signal?.presence) {
      const p = f.signal.presence;
      applyPresence(p.userId, !!p.online, Number(p.lastSeenMs ?? 0));
      return;
    }
    if (f.signal?.typing) applyTyping(f.signal.typing.conversationId, f.signal.typing.userId);
  }

  /** A reconnect may have missed signals and (after a resync) history. */
  private reconnects = 0;
  private afterResume() {
    if (this.reconnects++ === 0) return;
    refreshPresence([...friends.value.keys()]);
    loadConversations().catch(() => {});
  }

  /**
   * The server closes the socket (4001) when its access token expires: 45 s
   * before, refresh the token (accessToken() does within a minute of expiry)
   * and hand it over with an `auth` frame.
   */
  private scheduleAuth(ws: WebSocket, expiresAtMs: number) {
    if (this.authTimer) clearTimeout(this.authTimer);
    if (!expiresAtMs) return;
    const wait = Math.max(0, expiresAtMs - Date.now() - 45_000);
    this.authTimer = setTimeout(async () => {
      this.authTimer = null;
      try {
        const token = await accessToken();
        if (this.ws === ws && ws.readyState === WebSocket.OPEN) this.frame(ws, { auth: { accessToken: token } });
      } catch {
        /* the session is gone: the socket closes and the app logs out */
      }
    }, wait);
  }

  private heartbeat(ws: WebSocket) {
    if (Date.now() - this.lastHeard > 45_000) {
      ws.close(4000);
      return;
    }
    if (ws.readyState === WebSocket.OPEN) this.frame(ws, { ping: { clientTsMs: String(Date.now()) } });
  }

  private scheduleAck() {
    if (this.cursor - this.ackedCursor >= 100) return this.flushAck();
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAck(), 500);
  }

  private flushAck() {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    storeCursor(this.cursor);
    if (this.cursor > this.ackedCursor && this.ws?.readyState === WebSocket.OPEN) {
      this.frame(this.ws, { ack: { cursor: String(this.cursor) } });
      this.ackedCursor = this.cursor;
    }
  }

  /** Sends every pending message not in flight, in the order they were written. */
  private resendPending() {
    for (const p of pending.value) if (p.status === "sending") this.send(p);
  }

  send(p: Pending): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.caughtUp) return false;
    for (const inflight of this.sends.values()) if (inflight.clientMsgId === p.clientMsgId) return true;
    const id = this.frame(ws, {
      send: {
        conversationId: p.conversationId,
        clientMsgId: p.clientMsgId,
        body: p.body,
        ...(p.replyToSeq ? { replyToSeq: p.replyToSeq } : {}),
      },
    });
    this.sends.set(id, p);
    setTimeout(() => {
      if (this.sends.get(id) === p) {
        this.sends.delete(id);
        sendFailed(p.clientMsgId, "");
      }
    }, 15_000);
    return true;
  }

  typing(conversationId: string) {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN && this.caughtUp) this.frame(ws, { typing: { conversationId } });
  }
}

let current: Connection | null = null;

export function startConnection() {
  current?.stop();
  current = new Connection();
  current.start();
  return current;
}

export function stopConnection() {
  current?.stop();
  current = null;
}

export function sendTyping(conversationId: string) {
  current?.typing(conversationId);
}

/** Loads the state for a signed-in session and connects. */
export async function boot() {
  startConnection();
  await loadEverything();
  if (activeId.value) await loadLatest(activeId.value);
  void session;
}
