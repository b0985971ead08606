// Log in and register. A login reuses this browser's device of that user
// when it has one (its inbox cursor and presence stay the same device).
import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "./api";
import { lang, setLang, t } from "./i18n";
import { signedIn } from "./state";
import { errorMessage } from "./errors";

function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return `${browser}${os ? ` on ${os}` : ""}`.slice(0, 64);
}

export function LangSwitch() {
  return (
    <span class="lang-switch" role="group" aria-label={t().language}>
      <button type="button" aria-pressed={lang.value === "zh"} onClick={() => setLang("zh")}>中文</button>
      <button type="button" aria-pressed={lang.value === "en"} onClick={() => setLang("en")}>English</button>
    </span>
  );
}

/** Log in or sign up with a code sent to a phone number. */
function PhoneAuth() {
  const s = t();
  const [phone, setPhone] = useState("");
  const [code, setCode] = useState("");
  const [username, setUsername] = useState("");
  const [nickname, setNickname] = useState("");
  const [sentTo, setSentTo] = useState("");
  const [wait, setWait] = useState(0);
  const [needsAccount, setNeedsAccount] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (wait <= 0) return;
    const timer = setTimeout(() => setWait(wait - 1), 1000);
    return () => clearTimeout(timer);
  }, [wait]);

  const sendCode = async () => {
    setError("");
    try {
      const sent = await api.phoneCode(phone.trim());
      setSentTo(phone.trim());
      setNeedsAccount(false);
      setWait(Number(sent.resendAfterSecs ?? 60));
    } catch (err) {
      setError(errorMessage(err, "phone"));
      // A code went out a moment ago: count down to when another may.
      const after = err instanceof ApiError && /retry after (\d+) s/.exec(err.message);
      if (after) setWait(Number(after[1]));
    }
  };

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    const key = `phone:${phone.trim().replace(/[^+\d]/g, "")}`;
    try {
      let session;
      if (needsAccount) {
        session = await api.phoneRegister(phone.trim(), code.trim(), username.trim(), deviceName(), nickname.trim() || undefined);
      } else {
        const known = localStorage.getItem(`natter.device.${key}`) ?? undefined;
        try {
          session = await api.phoneLogin(phone.trim(), code.trim(), deviceName(), known);
        } catch (err) {
          if (err instanceof ApiError && err.status === 404 && known && !/no account/.test(err.message)) {
            session = await api.phoneLogin(phone.trim(), code.trim(), deviceName());
          } else if (err instanceof ApiError && err.status === 404) {
            setNeedsAccount(true);
            return;
          } else {
            throw err;
          }
        }
      }
      signedIn(session, key);
    } catch (err) {
      setError(errorMessage(err, needsAccount ? "register" : "phone"));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={submit}>
      <label class="field">
        {s.phone}
        <input name="phone" type="tel" autocomplete="tel" required placeholder={s.phoneHint} value={phone} onInput={(e) => setPhone(e.currentTarget.value)} />
      </label>
      <div class="code-row">
        <label class="field">
          {s.code}
          <input name="code" inputMode="numeric" autocomplete="one-time-code" required minLength={6} maxLength={6} pattern="[0-9]{6}" value={code} onInput={(e) => setCode(e.currentTarget.value)} />
        </label>
        <button class="btn secondary" type="button" disabled={wait > 0 || !phone.trim()} onClick={sendCode}>
          {wait > 0 ? s.resendIn(wait) : s.sendCode}
        </button>
      </div>
      {sentTo && !needsAccount && <p class="hint" role="status">{s.codeSent(sentTo)}</p>}
      {needsAccount && (
        <>
          <p class="hint" role="status">{s.noPhoneAccount}</p>
          <label class="field">
            {s.username}
            <input name="username" autocomplete="username" required minLength={3} maxLength={32} value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
          </label>
          <label class="field">
            {s.nickname}
            <input name="nickname" maxLength={64} value={nickname} onInput={(e) => setNickname(e.currentTarget.value)} />
          </label>
        </>
      )}
      {error && <p class="error-text" role="alert">{error}</p>}
      <button class="btn" type="submit" disabled={busy}>{needsAccount ? s.register : s.login}</button>
    </form>
  );
}

export function AuthScreen() {
  const s = t();
  const [mode, setMode] = useState<"login" | "register" | "phone">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [nickname, setNickname] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      if (mode === "register") await api.register(username.trim(), password, nickname.trim() || undefined);
      const known = localStorage.getItem(`natter.device.${username.trim().toLowerCase()}`) ?? undefined;
      let session;
      try {
        session = await api.login(username.trim(), password, deviceName(), known);
      } catch (err) {
        if (!(known && err instanceof ApiError && err.status === 404)) throw err;
        session = await api.login(username.trim(), password, deviceName());
      }
      signedIn(session, username.trim());
    } catch (err) {
      setError(errorMessage(err, mode === "login" ? "login" : "register"));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="auth">
      <div class="auth-card">
        <div class="auth-logo">
          <img src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 64 64'%3E%3Crect width='64' height='64' rx='16' fill='%232f7cf6'/%3E%3Cpath d='M14 21a7 7 0 0 1 7-7h22a7 7 0 0 1 7 7v13a7 7 0 0 1-7 7H31l-10 8v-8a7 7 0 0 1-7-7z' fill='%23fff'/%3E%3C/svg%3E" alt="" />
          <h1>natter</h1>
        </div>
        <p class="tagline">{s.tagline}</p>
        <h2>{mode === "login" ? s.loginTitle : mode === "phone" ? s.phoneTitle : s.registerTitle}</h2>
        {mode === "phone" ? <PhoneAuth /> : (
        <form onSubmit={submit}>
          <label class="field">
            {s.username}
            <input name="username" autocomplete="username" required minLength={3} maxLength={32} value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
          </label>
          {mode === "register" && (
            <label class="field">
              {s.nickname}
              <input name="nickname" maxLength={64} value={nickname} onInput={(e) => setNickname(e.currentTarget.value)} />
            </label>
          )}
          <label class="field">
            {s.password}
            <input name="password" type="password" autocomplete={mode === "login" ? "current-password" : "new-password"} required minLength={mode === "register" ? 8 : 1} maxLength={128} value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
          </label>
          {error && <p class="error-text" role="alert">{error}</p>}
          <button class="btn" type="submit" disabled={busy}>{mode === "login" ? s.login : s.register}</button>
        </form>
        )}
        <button class="linkish phone-switch" type="button" onClick={() => { setMode(mode === "phone" ? "login" : "phone"); setError(""); }}>
          {mode === "phone" ? s.usePassword : s.usePhone}
        </button>
        <div class="auth-foot">
          {mode === "phone" ? <span /> : (
            <button class="linkish" type="button" onClick={() => { setMode(mode === "login" ? "register" : "login"); setError(""); }}>
              {mode === "login" ? s.noAccount : s.haveAccount}
            </button>
          )}
          <LangSwitch />
        </div>
      </div>
    </main>
  );
}
