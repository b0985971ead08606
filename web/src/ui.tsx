// Small building blocks shared by the views: icons, avatars, dialogs, menus,
// and rendering user text safely (as text; links made clickable).
import type { ComponentChildren } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { t } from "./i18n";
import { fileUrl } from "./files";
import { avatarOf } from "./state";

const paths: Record<string, string> = {
  send: "M3.4 20.4 21 12 3.4 3.6 3.4 10.2 15 12 3.4 13.8z",
  back: "M15.4 6.4 14 5l-7 7 7 7 1.4-1.4L9.8 12z",
  info: "M11 7h2v2h-2zm0 4h2v6h-2zm1-9a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16z",
  close: "M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12z",
  more: "M12 8a2 2 0 1 0 0-4 2 2 0 0 0 0 4zm0 2a2 2 0 1 0 0 4 2 2 0 0 0 0-4zm0 6a2 2 0 1 0 0 4 2 2 0 0 0 0-4z",
  smile: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm-3.5-9a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3zm7 0a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3zM12 17.5c2.3 0 4.3-1.5 5-3.5H7c.7 2 2.7 3.5 5 3.5z",
  group: "M16 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm-8 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm0 2c-2.3 0-7 1.2-7 3.5V19h14v-2.5C15 14.2 10.3 13 8 13zm8 0c-.3 0-.6 0-1 .1 1.2.8 2 2 2 3.4V19h6v-2.5c0-2.3-4.7-3.5-7-3.5z",
  settings: "M19.4 13a7.5 7.5 0 0 0 0-2l2.1-1.6-2-3.5-2.5 1a7.3 7.3 0 0 0-1.7-1L15 3h-4l-.3 2.9a7.3 7.3 0 0 0-1.7 1l-2.5-1-2 3.5L6.6 11a7.5 7.5 0 0 0 0 2l-2.1 1.6 2 3.5 2.5-1c.5.4 1.1.7 1.7 1L11 21h4l.3-2.9c.6-.3 1.2-.6 1.7-1l2.5 1 2-3.5zM13 15.5a3.5 3.5 0 1 1 0-7 3.5 3.5 0 0 1 0 7z",
  check: "M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z",
  checks: "M18 7l-1.4-1.4-6.3 6.3 1.4 1.4zm4.2-1.4L11.7 16.2 7.5 12l-1.4 1.4 5.6 5.6 12-12zM.4 13.4 6 19l1.4-1.4L1.8 12z",
  clock: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7z",
  alert: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm1 15h-2v-2h2zm0-4h-2V7h2z",
  pin: "M16 3v2h-1v6l2 3v2h-4v5l-1 1-1-1v-5H7v-2l2-3V5H8V3z",
  bell_off: "M20 18.7 5.3 4 4 5.3l2.8 2.8A6 6 0 0 0 6 11v5l-2 2v1h13.7l1.9 1.9zM12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-7.2V11a6 6 0 0 0-4.5-5.8V4.5a1.5 1.5 0 0 0-3 0v.7c-.6.1-1.1.4-1.6.7z",
  person_add: "M15 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-9-2V7H4v3H1v2h3v3h2v-3h3v-2zm9 4c-2.7 0-8 1.3-8 4v2h16v-2c0-2.7-5.3-4-8-4z",
  chat: "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z",
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z",
  attach: "M16.5 6v11.5a4 4 0 0 1-8 0V5a2.5 2.5 0 0 1 5 0v10.5a1 1 0 0 1-2 0V6H10v9.5a2.5 2.5 0 0 0 5 0V5a4 4 0 0 0-8 0v12.5a5.5 5.5 0 0 0 11 0V6z",
};

export function Icon({ name }: { name: keyof typeof paths | string }) {
  return (
    <svg viewBox="0 0 24 24" aria-hidden="true" fill="currentColor">
      <path d={paths[name] ?? ""} />
    </svg>
  );
}

const palette = ["#e57373", "#f06292", "#ba68c8", "#7986cb", "#4fc3f7", "#4db6ac", "#81c784", "#ffb74d", "#a1887f", "#90a4ae"];

function hash(s: string): number {
  let h = 0;
  for (const ch of s) h = (h * 31 + ch.codePointAt(0)!) >>> 0;
  return h;
}

/** Initials on a color derived from the id (the same person, the same color). */
/** A user's avatar picture when they have one (its small thumbnail), else
 * initials on a color derived from the id (the same person, the same color). */
export function Avatar({ id, name, size = 44, online }: { id: string; name: string; size?: number; online?: boolean }) {
  const file = avatarOf(id);
  const [url, setUrl] = useState<string | undefined>();
  useEffect(() => {
    let live = true;
    setUrl(undefined);
    if (file) fileUrl(file, size > 64 ? "large" : "small").then((u) => live && setUrl(u), () => {});
    return () => {
      live = false;
    };
  }, [file, size > 64]);
  const letters = [...(name || "?").trim()];
  const initials = /^[\x00-\x7f]/.test(letters[0] ?? "")
    ? letters.slice(0, 2).join("").toUpperCase()
    : letters.slice(0, 1).join("");
  return (
    <span class="avatar" aria-hidden="true" style={{ width: `${size}px`, height: `${size}px`, background: palette[hash(id) % palette.length], fontSize: `${Math.round(size * 0.38)}px` }}>
      {url ? <img src={url} alt="" /> : initials}
      {online && <span class="presence-dot" />}
    </span>
  );
}

const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+[^\s<>"'`.,;:!?)\]}，。！？；：）】」]/g;

/** User text as text nodes, with http(s) links made clickable (never HTML). */
export function RichText({ text }: { text: string }) {
  const parts: ComponentChildren[] = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    const i = m.index ?? 0;
    if (i > last) parts.push(text.slice(last, i));
    let href = "";
    try {
      const u = new URL(m[0]);
      if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
    } catch {
      /* not a link */
    }
    parts.push(href ? <a href={href} target="_blank" rel="noopener noreferrer nofollow">{m[0]}</a> : m[0]);
    last = i + m[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return <>{parts}</>;
}

export function Modal({ title, onClose, children, foot }: { title: string; onClose: () => void; children: ComponentChildren; foot?: ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  const id = useRef(`dlg-${Math.random().toString(36).slice(2)}`).current;
  useEffect(() => {
    const prev = document.activeElement as HTMLElement | null;
    const first = ref.current?.querySelector<HTMLElement>("input, textarea, select, button:not(.icon-btn)");
    first?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") onClose();
    };
    document.addEventListener("keydown", onKey);
    return () => {
      document.removeEventListener("keydown", onKey);
      prev?.focus?.();
    };
  }, []);
  return (
    <div class="overlay" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby={id} ref={ref}>
        <h2 id={id}>{title}</h2>
        <div class="body">{children}</div>
        {foot && <div class="foot">{foot}</div>}
      </div>
    </div>
  );
}

/** A yes/no question; resolves through the callbacks. */
export function Confirm({ text, danger, onYes, onNo }: { text: string; danger?: boolean; onYes: () => void; onNo: () => void }) {
  const s = t();
  return (
    <Modal
      title={text}
      onClose={onNo}
      foot={
        <>
          <button class="btn secondary" onClick={onNo}>{s.cancel}</button>
          <button class={danger ? "btn danger" : "btn"} onClick={onYes}>OK</button>
        </>
      }
    >
      {null}
    </Modal>
  );
}

export interface MenuItem {
  label: string;
  danger?: boolean;
  onSelect: () => void;
}

/** A popup menu at a point; arrow keys move, Escape closes. */
export function Menu({ x, y, items, label, onClose }: { x: number; y: number; items: MenuItem[]; label: string; onClose: () => void }) {
  const ref = useRef<HTMLDivElement>(null);
  const [pos, setPos] = useState({ x, y });
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const r = el.getBoundingClientRect();
    setPos({ x: Math.max(8, Math.min(x, innerWidth - r.width - 8)), y: Math.max(8, Math.min(y, innerHeight - r.height - 8)) });
    el.querySelector<HTMLElement>("button")?.focus();
  }, [x, y]);
  useEffect(() => {
    const close = (e: Event) => {
      if (!ref.current?.contains(e.target as Node)) onClose();
    };
    const key = (e: KeyboardEvent) => {
      if (e.key === "Escape") onClose();
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        const buttons = [...(ref.current?.querySelectorAll<HTMLElement>("button") ?? [])];
        const i = buttons.indexOf(document.activeElement as HTMLElement);
        buttons[(i + (e.key === "ArrowDown" ? 1 : buttons.length - 1)) % buttons.length]?.focus();
        e.preventDefault();
      }
    };
    setTimeout(() => document.addEventListener("mousedown", close), 0);
    document.addEventListener("keydown", key);
    return () => {
      document.removeEventListener("mousedown", close);
      document.removeEventListener("keydown", key);
    };
  }, []);
  return (
    <div class="menu" role="menu" aria-label={label} ref={ref} style={{ left: `${pos.x}px`, top: `${pos.y}px` }}>
      {items.map((it) => (
        <button role="menuitem" class={it.danger ? "danger" : ""} onClick={() => { onClose(); it.onSelect(); }}>
          {it.label}
        </button>
      ))}
    </div>
  );
}

/** Runs an async action with errors reported as toasts; answers whether it worked. */
export async function attempt(f: () => Promise<unknown>, report: (e: unknown) => void): Promise<boolean> {
  try {
    await f();
    return true;
  } catch (e) {
    report(e);
    return false;
  }
}
