// Dialogs opened from the sidebar: a new group, picking friends, and the
// settings (profile, language, theme, devices, log out).
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError } from "./api";
import { LIMITS, upload } from "./files";
import { errorMessage } from "./errors";
import { formatWhen, lang, setLang, t } from "./i18n";
import { friends, loadGroups, logout, me, openConversation, reportError, showToast } from "./state";
import type { Device, Group, Profile } from "./types";
import { attempt, Avatar, Modal } from "./ui";
import { setTheme, theme } from "./theme";

export function PickFriends({ title, exclude, action, onPick, onClose, children }: {
  title: string; exclude?: Set<string>; action: string; onPick: (ids: string[]) => void; onClose: () => void; children?: preact.ComponentChildren;
}) {
  const s = t();
  const [picked, setPicked] = useState<Set<string>>(new Set());
  const list = [...friends.value.values()].filter((f) => !exclude?.has(f.profile.userId));
  const toggle = (id: string) => {
    const next = new Set(picked);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setPicked(next);
  };
  return (
    <Modal title={title} onClose={onClose} foot={<><button class="btn secondary" onClick={onClose}>{s.cancel}</button><button class="btn" onClick={() => onPick([...picked])}>{action}</button></>}>
      {children}
      <fieldset style={{ border: 0, padding: 0, margin: 0 }}>
        <legend class="group-label" style={{ padding: "4px 0" }}>{s.chooseFriends}</legend>
        {list.length === 0 && <p class="list-empty">{s.noFriendsToAdd}</p>}
        {list.map((f) => {
          const name = f.profile.nickname || f.profile.username || "";
          return (
            <label class="pick" key={f.profile.userId}>
              <input type="checkbox" checked={picked.has(f.profile.userId)} onChange={() => toggle(f.profile.userId)} />
              <Avatar id={f.profile.userId} name={name} size={32} />
              <span>{name}</span>
            </label>
          );
        })}
      </fieldset>
    </Modal>
  );
}

export function NewGroupDialog({ onClose }: { onClose: () => void }) {
  const s = t();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const create = (ids: string[]) =>
    attempt(async () => {
      const g = await api.post<Group>("/v1/groups", { name: name.trim(), description: description.trim(), memberIds: ids });
      await loadGroups();
      onClose();
      // The conversation appears with its "created" notice.
      setTimeout(() => openConversation(g.conversationId), 300);
    }, reportError);
  return (
    <PickFriends title={s.newGroup} action={s.create} onPick={create} onClose={onClose}>
      <label class="field">
        {s.groupName}
        <input maxLength={64} required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label class="field">
        {s.description}
        <input maxLength={500} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </label>
    </PickFriends>
  );
}

export function SettingsDialog({ onClose }: { onClose: () => void }) {
  const s = t();
  const profile = me.value;
  const [nickname, setNickname] = useState(profile?.nickname ?? "");
  const [signature, setSignature] = useState(profile?.signature ?? "");
  const save = () =>
    attempt(async () => {
      me.value = await api.patch<Profile>("/v1/profile", { nickname: nickname.trim(), signature: signature.trim() });
      showToast(s.saved);
    }, reportError);
  const picker = useRef<HTMLInputElement>(null);
  const setAvatar = (avatar: string) =>
    attempt(async () => {
      me.value = await api.patch<Profile>("/v1/profile", { avatar });
      showToast(s.saved);
    }, reportError);
  const onPick = (e: Event) => {
    const input = e.currentTarget as HTMLInputElement;
    const file = input.files?.[0];
    input.value = "";
    if (!file) return;
    attempt(async () => {
      if (file.size > LIMITS.avatar) throw new ApiError("too_large", s.errors.too_large, 413);
      const fileId = await upload(file, file.name || "avatar", "avatar", () => {}).done;
      await setAvatar(fileId);
    }, reportError);
  };
  return (
    <Modal title={s.settings} onClose={onClose} foot={<><button class="btn danger" onClick={() => logout()}>{s.logout}</button><button class="btn secondary" onClick={onClose}>{s.close}</button><button class="btn" onClick={save}>{s.save}</button></>}>
      <div class="profile-top">
        <Avatar id={profile?.userId ?? ""} name={nickname || profile?.username || ""} size={64} />
        <span class="sub">@{profile?.username}</span>
        <div class="avatar-edit">
          <button class="btn small secondary" onClick={() => picker.current?.click()}>{s.changeAvatar}</button>
          {profile?.avatar && <button class="btn small secondary" onClick={() => setAvatar("")}>{s.removeAvatar}</button>}
          <input ref={picker} type="file" accept="image/jpeg,image/png,image/gif,image/webp" hidden aria-label={s.changeAvatar} onChange={onPick} />
        </div>
      </div>
      <label class="field">
        {s.nickname.replace(/（.*）|\s*\(.*\)/, "")}
        <input maxLength={64} value={nickname} onInput={(e) => setNickname(e.currentTarget.value)} />
      </label>
      <label class="field">
        {s.signature}
        <input maxLength={200} value={signature} onInput={(e) => setSignature(e.currentTarget.value)} />
      </label>
      <div class="field">
        {s.language}
        <div class="seg" role="group" aria-label={s.language}>
          <button aria-pressed={lang.value === "zh"} onClick={() => setLang("zh")}>简体中文</button>
          <button aria-pressed={lang.value === "en"} onClick={() => setLang("en")}>English</button>
        </div>
      </div>
      <div class="field">
        {s.theme}
        <div class="seg" role="group" aria-label={s.theme}>
          <button aria-pressed={theme.value === "system"} onClick={() => setTheme("system")}>{s.themeSystem}</button>
          <button aria-pressed={theme.value === "light"} onClick={() => setTheme("light")}>{s.themeLight}</button>
          <button aria-pressed={theme.value === "dark"} onClick={() => setTheme("dark")}>{s.themeDark}</button>
        </div>
      </div>
      <PhoneChange />
      <Devices />
    </Modal>
  );
}

/** A new phone number, proven by the code sent to it (logs out the other devices). */
function PhoneChange() {
  const s = t();
  const [phone, setPhone] = useState("");
  const [code, setCode] = useState("");
  const [wait, setWait] = useState(0);
  useEffect(() => {
    if (wait <= 0) return;
    const timer = setTimeout(() => setWait(wait - 1), 1000);
    return () => clearTimeout(timer);
  }, [wait]);
  const send = () =>
    attempt(async () => {
      const sent = await api.phoneCode(phone.trim());
      setWait(Number(sent.resendAfterSecs ?? 60));
    }, reportError);
  const change = () =>
    attempt(async () => {
      await api.post("/v1/auth/phone", { phone: phone.trim(), code: code.trim() });
      setPhone("");
      setCode("");
      showToast(s.phoneChanged);
    }, (e) => showToast(errorMessage(e, "phone")));
  return (
    <div class="field">
      {s.changePhone}
      <input class="input" type="tel" autocomplete="tel" aria-label={s.newPhone} placeholder={s.phoneHint} value={phone} onInput={(e) => setPhone(e.currentTarget.value)} />
      <div class="phone-row">
        <input class="input" inputMode="numeric" autocomplete="one-time-code" aria-label={s.code} placeholder={s.code} maxLength={6} value={code} onInput={(e) => setCode(e.currentTarget.value)} />
        <button class="btn secondary" type="button" disabled={wait > 0 || !phone.trim()} onClick={send}>{wait > 0 ? s.resendIn(wait) : s.sendCode}</button>
        <button class="btn" type="button" aria-label={s.changePhone} disabled={code.trim().length !== 6} onClick={change}>{s.change}</button>
      </div>
    </div>
  );
}

/** My devices: which is this one, when each was last active; log any other out. */
function Devices() {
  const s = t();
  const [devices, setDevices] = useState<Device[] | null>(null);
  const load = () =>
    attempt(async () => {
      setDevices((await api.get<{ devices?: Device[] }>("/v1/devices")).devices ?? []);
    }, reportError);
  useEffect(() => {
    load();
  }, []);
  const logOut = (path: string) =>
    attempt(async () => {
      await api.del(path);
      showToast(s.loggedOutDevices);
      await load();
    }, reportError);
  const others = (devices ?? []).filter((d) => !d.current && d.signedIn);
  return (
    <div class="field">
      {s.devices}
      <ul class="devices" aria-label={s.devices}>
        {(devices ?? []).map((d) => (
          <li key={d.deviceId} class="device">
            <span class="device-name">{d.name || d.deviceId.slice(0, 8)}</span>
            <span class="sub">
              {d.current ? s.thisDevice : d.signedIn ? s.lastActive(formatWhen(Number(d.lastActiveAtMs ?? 0))) : s.signedOut}
            </span>
            {!d.current && d.signedIn && (
              <button
                class="btn secondary small"
                aria-label={s.logoutDeviceNamed(d.name || d.deviceId.slice(0, 8))}
                onClick={() => logOut(`/v1/devices/${encodeURIComponent(d.deviceId)}`)}
              >
                {s.logoutDevice}
              </button>
            )}
          </li>
        ))}
      </ul>
      {others.length > 0 && (
        <button class="btn secondary" onClick={() => logOut("/v1/devices?all_others=true")}>{s.logoutOthers}</button>
      )}
    </div>
  );
}
