// The readable text of an error, in the user's language: a sentence for the
// stable code, and the server's own detail where it says what to fix.
import { ApiError } from "./api";
import { lang, t } from "./i18n";

const zhDetails: [RegExp, string | ((m: RegExpMatchArray) => string)][] = [
  [/username is taken|username .*taken/i, "用户名已被占用"],
  [/phone number is already used/i, "该手机号已被其他账号使用"],
  [/international form/i, "请填写带国家码的手机号，例如 +86 138 0013 8000"],
  [/code is 6 digits/i, "验证码是 6 位数字"],
  [/password .*(at least|characters)/i, "密码需要 8 到 128 个字符"],
  [/username/i, "用户名需要 3-32 个字母、数字或 _ . -，并以字母开头"],
  [/only message your friends/i, "只能给好友发消息：请先发送好友申请"],
  [/you blocked this user/i, "你已拉黑该用户，请先移出黑名单"],
  [/does not accept your friend request/i, "对方不接受你的好友申请"],
  [/recalled within (\d+) seconds/i, (m) => `只能撤回 ${m[1]} 秒内的消息`],
  [/only the sender may recall/i, "只能撤回自己的消息"],
  [/group is muted/i, "全员禁言中，仅群主和管理员可发言"],
  [/you are muted/i, "你已被禁言"],
  [/not a member of this group/i, "你不是该群成员"],
  [/only the owner and admins/i, "只有群主和管理员可以这样做"],
  [/only the owner may/i, "只有群主可以这样做"],
  [/already friends/i, "你们已经是好友了"],
  [/already .*member/i, "已经是群成员了"],
  [/can only add your friends/i, "只能邀请你的好友入群"],
  [/the owner and admins cannot be muted/i, "不能禁言群主和管理员"],
  [/transfer/i, "群主需要先转让群主才能退群"],
];

export function errorMessage(e: unknown, context?: "login" | "register" | "phone"): string {
  const s = t();
  if (!(e instanceof ApiError)) return s.errors.internal;
  if (e.code === "unauthorized" && context === "phone") return s.codeWrong;
  if (e.code === "unauthorized" && context !== "login") return s.errors.session;
  if (e.code === "unavailable" && /no speech engine/i.test(e.message)) return s.noSpeech;
  if (e.code === "unavailable" && /speech engine/i.test(e.message)) return s.speechUnavailable;
  if (e.code === "unauthorized" || e.code === "network" || e.code === "internal" || e.code === "unavailable" || e.code === "rate_limited") {
    return s.errors[e.code] ?? s.errors.internal;
  }
  const base = s.errors[e.code] ?? s.errors.internal;
  if (!e.message) return base;
  if (lang.value === "zh") {
    for (const [re, zh] of zhDetails) {
      const m = e.message.match(re);
      if (m) return typeof zh === "string" ? zh : zh(m);
    }
    return `${base}（${e.message}）`;
  }
  return `${base}: ${e.message}`;
}
