// The right pane (or a page of its own on a phone): a person's profile with
// what can be done with them, or a group's info, members and management.
import { useEffect, useState } from "preact/hooks";
import { api, enc } from "./api";
import { formatLastSeen, t } from "./i18n";
import {
  blocked, contactId, conversations, detailsOpen, displayName, formerGroups, friends, groupIdOf, groupMembers, groups,
  loadGroup, loadMembers, loadSocial, myId, openDirect, pane, peerOf, presence, profiles, reportError, ensureProfiles,
} from "./state";
import type { Group, Member, Profile } from "./types";
import { attempt, Avatar, Confirm, Icon, Menu, Modal, type MenuItem } from "./ui";
import { PickFriends } from "./dialogs";

export function DetailsPane({ conversationId }: { conversationId: string }) {
  const s = t();
  const close = () => {
    detailsOpen.value = false;
    if (pane.value === "details") pane.value = "chat";
  };
  const gid = groupIdOf(conversationId);
  const peer = peerOf(conversationId);
  return (
    <aside class="details" aria-label={s.details}>
      <div class="details-head">
        <button class="icon-btn" aria-label={s.close} onClick={close}><Icon name={pane.value === "details" ? "back" : "close"} /></button>
        <h2>{gid ? s.details : s.profile}</h2>
      </div>
      <div class="details-body">
        {gid ? <GroupInfo gid={gid} conversationId={conversationId} /> : peer ? <PersonInfo userId={peer} inChat /> : null}
      </div>
    </aside>
  );
}

/** A contact opened from the contacts tab, in the main area. */
export function ContactPage({ userId }: { userId: string }) {
  const s = t();
  return (
    <section class="main" aria-label={s.profile}>
      <header class="chat-head">
        <button class="icon-btn back-btn" aria-label={s.back} onClick={() => { contactId.value = null; pane.value = "list"; }}><Icon name="back" /></button>
        <div class="title"><strong>{displayName(userId)}</strong></div>
      </header>
      <div class="details-body" style={{ background: "var(--panel)" }}>
        <div style={{ maxWidth: "420px", margin: "0 auto" }}>
          <PersonInfo userId={userId} />
        </div>
      </div>
    </section>
  );
}

function PersonInfo({ userId, inChat = false }: { userId: string; inChat?: boolean }) {
  const s = t();
  const [confirm, setConfirm] = useState<"delete" | "block" | null>(null);
  const friend = friends.value.get(userId);
  const p: Profile | undefined = friend?.profile ?? profiles.value.get(userId);
  useEffect(() => ensureProfiles([userId]), [userId]);
  const pr = presence.value.get(userId);
  const isBlocked = blocked.value.some((b) => b.userId === userId);
  const name = p?.nickname || p?.username || "…";
  const run = (f: () => Promise<unknown>) => attempt(async () => { await f(); await loadSocial(); }, reportError);
  return (
    <>
      <div class="profile-top">
        <Avatar id={userId} name={name} size={88} online={!!pr?.online} />
        <h3>{name}</h3>
        <span class="sub">@{p?.username}</span>
        {friend && <span class="sub">{pr?.online ? s.online : pr ? formatLastSeen(pr.lastSeenMs) : ""}</span>}
        {friend?.sinceMs && <span class="sub">{s.since(new Date(Number(friend.sinceMs)).toLocaleDateString())}</span>}
      </div>
      {p?.signature && (
        <div class="section"><h4>{s.signature}</h4><p>{p.signature}</p></div>
      )}
      {userId !== myId.value && (
        <div class="actions">
          {friend && !inChat && <button class="btn" onClick={() => openDirect(userId)}>{s.message}</button>}
          {friend && <button class="btn danger" onClick={() => setConfirm("delete")}>{s.deleteFriend}</button>}
          {isBlocked ? (
            <button class="btn secondary" onClick={() => run(() => api.del(`/v1/blocks/${enc(userId)}`))}>{s.unblock}</button>
          ) : (
            <button class="btn danger" onClick={() => setConfirm("block")}>{s.block}</button>
          )}
        </div>
      )}
      {confirm && (
        <Confirm
          danger
          text={confirm === "delete" ? s.confirmDeleteFriend(name) : s.confirmBlock(name)}
          onNo={() => setConfirm(null)}
          onYes={() => {
            setConfirm(null);
            run(() => (confirm === "delete" ? api.del(`/v1/friends/${enc(userId)}`) : api.put(`/v1/blocks/${enc(userId)}`)));
          }}
        />
      )}
    </>
  );
}

function GroupInfo({ gid, conversationId }: { gid: string; conversationId: string }) {
  const s = t();
  const group = groups.value.get(gid);
  const members = groupMembers.value.get(gid);
  const [editing, setEditing] = useState<"name" | "description" | "announcement" | null>(null);
  const [inviting, setInviting] = useState(false);
  const [confirm, setConfirm] = useState<{ text: string; run: () => Promise<unknown> } | null>(null);
  const [menu, setMenu] = useState<{ x: number; y: number; m: Member } | null>(null);
  // The switch shows the asked state while the server answers.
  const [mutingAll, setMutingAll] = useState<boolean | null>(null);
  useEffect(() => {
    if (!formerGroups.value.has(conversationId)) {
      loadGroup(gid).catch(reportError);
      loadMembers(gid).catch(() => {});
    }
  }, [gid]);
  if (formerGroups.value.has(conversationId) || !group) {
    const c = conversations.value.get(conversationId);
    return <div class="profile-top"><Avatar id={gid} name={c?.title ?? ""} size={88} /><h3>{c?.title}</h3><span class="sub">{formerGroups.value.has(conversationId) ? s.notMember : ""}</span></div>;
  }
  const role = group.me?.role ?? "member";
  const manager = role === "owner" || role === "admin";
  const change = (f: () => Promise<unknown>) =>
    attempt(async () => {
      await f();
      await Promise.all([loadGroup(gid), loadMembers(gid)]);
    }, reportError);
  const roleName = (r: string) => (r === "owner" ? s.owner : r === "admin" ? s.admin : s.member);
  const sorted = [...(members ?? [])].sort((a, b) => rank(a.role) - rank(b.role) || displayName(a.userId).localeCompare(displayName(b.userId)));
  const memberItems = (m: Member): MenuItem[] => {
    const items: MenuItem[] = [];
    const name = displayName(m.userId);
    const path = `/v1/groups/${enc(gid)}`;
    if (friends.value.has(m.userId)) items.push({ label: s.message, onSelect: () => openDirect(m.userId) });
    if (role === "owner" && m.role !== "owner") {
      items.push(m.role === "admin"
        ? { label: s.removeAdmin, onSelect: () => change(() => api.put(`${path}/members/${enc(m.userId)}/role`, { role: "member" })) }
        : { label: s.makeAdmin, onSelect: () => change(() => api.put(`${path}/members/${enc(m.userId)}/role`, { role: "admin" })) });
      items.push({ label: s.transferOwner, onSelect: () => setConfirm({ text: s.confirmTransfer(name), run: () => api.post(`${path}/transfer`, { userId: m.userId }) }) });
    }
    if (manager && m.role === "member") {
      const muted = Number(m.mutedUntilMs ?? 0) > Date.now();
      items.push(muted
        ? { label: s.unmuteMember, onSelect: () => change(() => api.post(`${path}/mute`, { userId: m.userId, muted: false })) }
        : { label: s.muteMember, onSelect: () => change(() => api.post(`${path}/mute`, { userId: m.userId, muted: true })) });
    }
    if ((role === "owner" && m.role !== "owner") || (role === "admin" && m.role === "member")) {
      items.push({ label: s.removeMember, danger: true, onSelect: () => change(() => api.del(`${path}/members/${enc(m.userId)}`)) });
    }
    return items;
  };
  return (
    <>
      <div class="profile-top">
        <Avatar id={gid} name={group.name} size={88} />
        <h3>{group.name}</h3>
        <span class="sub">{s.members(group.memberCount ?? 0)}</span>
        {manager && <button class="btn small secondary" onClick={() => setEditing("name")}>{s.edit}</button>}
      </div>
      <GroupText label={s.description} value={group.description} canEdit={manager} onEdit={() => setEditing("description")} />
      <GroupText label={s.announcement} value={group.announcement} canEdit={manager} onEdit={() => setEditing("announcement")} />
      {manager && (
        <label class="toggle">
          {s.muteAll}
          <input
            type="checkbox"
            role="switch"
            checked={mutingAll ?? !!group.mutedAll}
            onChange={(e) => {
              const muted = e.currentTarget.checked;
              setMutingAll(muted);
              change(() => api.post(`/v1/groups/${enc(gid)}/mute`, { muted })).finally(() => setMutingAll(null));
            }}
          />
        </label>
      )}
      <div class="section" aria-label={s.memberList} role="region">
        <h4>
          {s.memberList}
          {manager && <button class="btn small" onClick={() => setInviting(true)}>{s.invite}</button>}
        </h4>
        {sorted.map((m) => {
          const name = displayName(m.userId);
          const muted = Number(m.mutedUntilMs ?? 0) > Date.now();
          const items = m.userId === myId.value ? [] : memberItems(m);
          return (
            <div class="member" key={m.userId} role="group" aria-label={name}>
              <Avatar id={m.userId} name={name} size={34} online={!!presence.value.get(m.userId)?.online} />
              <span class="name">{m.userId === myId.value ? `${name} (${s.you})` : name}</span>
              {muted && <span class="role">{s.mutedUntil}</span>}
              {m.role !== "member" && <span class={`role ${m.role}`}>{roleName(m.role)}</span>}
              {items.length > 0 && (
                <button class="icon-btn" aria-label={s.memberActions(name)} aria-haspopup="menu" onClick={(e) => { const r = (e.currentTarget as HTMLElement).getBoundingClientRect(); setMenu({ x: r.right - 180, y: r.bottom + 2, m }); }}>
                  <Icon name="more" />
                </button>
              )}
            </div>
          );
        })}
      </div>
      <div class="actions">
        {role !== "owner" && (
          <button class="btn danger" onClick={() => setConfirm({ text: s.confirmLeave, run: () => api.post(`/v1/groups/${enc(gid)}/leave`) })}>{s.leaveGroup}</button>
        )}
        {role === "owner" && (
          <button class="btn danger" onClick={() => setConfirm({ text: s.confirmDismiss, run: () => api.del(`/v1/groups/${enc(gid)}`) })}>{s.dismissGroup}</button>
        )}
      </div>
      {menu && <Menu x={menu.x} y={menu.y} label={s.memberActions(displayName(menu.m.userId))} items={memberItems(menu.m)} onClose={() => setMenu(null)} />}
      {editing && <EditGroup group={group} field={editing} onClose={() => setEditing(null)} />}
      {inviting && (
        <PickFriends
          title={s.inviteMembers}
          exclude={new Set((members ?? []).map((m) => m.userId))}
          action={s.invite}
          onClose={() => setInviting(false)}
          onPick={(ids) => change(() => api.post(`/v1/groups/${enc(gid)}/members`, { userIds: ids })).then((ok) => ok && setInviting(false))}
        />
      )}
      {confirm && (
        <Confirm danger text={confirm.text} onNo={() => setConfirm(null)} onYes={() => { const c = confirm; setConfirm(null); change(c.run); }} />
      )}
    </>
  );
}

function rank(role: string) {
  return role === "owner" ? 0 : role === "admin" ? 1 : 2;
}

function GroupText({ label, value, canEdit, onEdit }: { label: string; value?: string; canEdit: boolean; onEdit: () => void }) {
  if (!value && !canEdit) return null;
  const s = t();
  return (
    <div class="section">
      <h4>{label}{canEdit && <button class="linkish" aria-label={`${s.edit} ${label}`} onClick={onEdit}>{s.edit}</button>}</h4>
      <p class={value ? "" : "placeholder"}>{value || "—"}</p>
    </div>
  );
}

function EditGroup({ group, field, onClose }: { group: Group; field: "name" | "description" | "announcement"; onClose: () => void }) {
  const s = t();
  const [value, setValue] = useState(group[field] ?? "");
  const label = field === "name" ? s.rename : field === "description" ? s.description : s.announcement;
  const save = () =>
    attempt(async () => {
      const g = await api.patch<Group>(`/v1/groups/${enc(group.id)}`, { [field]: value });
      const next = new Map(groups.value);
      next.set(group.id, g);
      groups.value = next;
      onClose();
    }, reportError);
  return (
    <Modal title={label} onClose={onClose} foot={<><button class="btn secondary" onClick={onClose}>{s.cancel}</button><button class="btn" onClick={save}>{s.save}</button></>}>
      <label class="field">
        {label}
        {field === "name" ? (
          <input maxLength={64} value={value} onInput={(e) => setValue(e.currentTarget.value)} onKeyDown={(e) => e.key === "Enter" && save()} />
        ) : (
          <textarea rows={5} maxLength={field === "announcement" ? 2000 : 500} value={value} onInput={(e) => setValue(e.currentTarget.value)} />
        )}
      </label>
    </Modal>
  );
}

