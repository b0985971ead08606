// The HTTP JSON API: calls with the access token, refreshed before it
// expires (one tab at a time, through a Web Lock), and errors as ApiError
// with the server's stable code.
import type { Session } from "./types";

export class ApiError extends Error {
  constructor(
    public code: string,
    message: string,
    public status = 0,
  ) {
    super(message);
  }
}

const KEY = "natter.session";

export function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null) {
  if (s) localStorage.setItem(KEY, JSON.stringify(s));
  else localStorage.removeItem(KEY);
}

/** Called when the session is gone for good (refresh refused). */
let onSessionLost: () => void = () => {};
export function setSessionLostHandler(f: () => void) {
  onSessionLost = f;
}

async function raw<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError("network", "cannot reach the server");
  }
  const text = await res.text();
  let data: any = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(res.ok ? "internal" : "unavailable", text.slice(0, 200), res.status);
  }
  if (!res.ok) {
    const e = data?.error ?? {};
    throw new ApiError(e.code ?? "internal", e.message ?? res.statusText, res.status);
  }
  return data as T;
}

let refreshing: Promise<Session | null> | null = null;

/** Exchanges the refresh token; another tab may have done it already. */
async function refresh(stale: Session): Promise<Session | null> {
  const run = async () => {
    const current = loadSession();
    if (!current || current.userId !== stale.userId) return null;
    if (current.accessToken !== stale.accessToken && Number(current.expiresAtMs) - Date.now() > 60_000) {
      return current;
    }
    try {
      const next = await raw<Session>("POST", "/v1/auth/refresh", { refreshToken: current.refreshToken });
      saveSession(next);
      return next;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null;
      throw e;
    }
  };
  if (!refreshing) {
    refreshing = (navigator.locks ? navigator.locks.request("natter.refresh", run) : run()).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** A valid access token, refreshed when it is about to expire. */
export async function accessToken(): Promise<string> {
  let s = loadSession();
  if (!s) throw new ApiError("session", "not logged in", 401);
  if (Number(s.expiresAtMs) - Date.now() < 60_000) {
    s = await refresh(s);
    if (!s) {
      onSessionLost();
      throw new ApiError("session", "session ended", 401);
    }
  }
  return s.accessToken;
}

/** A call as the logged-in user; a 401 refreshes once and retries. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const token = await accessToken();
  try {
    return await raw<T>(method, path, body, token);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
    const s = loadSession();
    const next = s && (await refresh({ ...s, accessToken: token }));
    if (!next) {
      onSessionLost();
      throw new ApiError("session", "session ended", 401);
    }
    return raw<T>(method, path, body, next.accessToken);
  }
}

export const api = {
  register: (username: string, password: string, nickname?: string) =>
    raw<{ userId: string }>("POST", "/v1/auth/register", { username, password, ...(nickname ? { nickname } : {}) }),
  login: (username: string, password: string, deviceName: string, deviceId?: string) =>
    raw<Session>("POST", "/v1/auth/login", { username, password, deviceName, ...(deviceId ? { deviceId } : {}) }),
  phoneCode: (phone: string) =>
    raw<{ resendAfterSecs?: number; expiresInSecs?: number }>("POST", "/v1/auth/phone/code", { phone }),
  phoneLogin: (phone: string, code: string, deviceName: string, deviceId?: string) =>
    raw<Session>("POST", "/v1/auth/phone/login", { phone, code, deviceName, ...(deviceId ? { deviceId } : {}) }),
  phoneRegister: (phone: string, code: string, username: string, deviceName: string, nickname?: string) =>
    raw<Session>("POST", "/v1/auth/phone/register", { phone, code, username, deviceName, ...(nickname ? { nickname } : {}) }),
  logout: () => call<{}>("POST", "/v1/auth/logout", {}),
  get: <T>(path: string) => call<T>("GET", path),
  post: <T>(path: string, body: unknown = {}) => call<T>("POST", path, body),
  put: <T>(path: string, body?: unknown) => call<T>("PUT", path, body),
  patch: <T>(path: string, body: unknown) => call<T>("PATCH", path, body),
  del: <T>(path: string) => call<T>("DELETE", path),
};

export const enc = encodeURIComponent;
