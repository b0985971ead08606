// The wire types the client uses, in the canonical protobuf JSON mapping
// (docs/protocol.md): 64-bit integers are strings, defaults are left out.

export interface Session {
  userId: string;
  deviceId: string;
  accessToken: string;
  expiresAtMs: string;
  refreshToken: string;
  refreshExpiresAtMs?: string;
}

export interface Profile {
  userId: string;
  username?: string;
  nickname?: string;
  signature?: string;
  avatar?: string;
  updatedAtMs?: string;
}

export interface UserPresence {
  userId: string;
  online?: boolean;
  onlineDeviceIds?: string[];
  lastSeenMs?: string;
}

export interface Friend {
  profile: Profile;
  sinceMs?: string;
  presence?: UserPresence;
}

export interface FriendRequest {
  id: string;
  fromUserId: string;
  toUserId: string;
  greeting?: string;
  status?: string;
  createdAtMs?: string;
  peer?: Profile;
}

export interface SystemNotice {
  kind: string;
  actorId?: string;
  userIds?: string[];
  text?: string;
}

export interface MessageBody {
  text?: { text: string };
  image?: { fileId: string; width?: number; height?: number; sizeBytes?: string; mimeType?: string; thumbnailFileId?: string };
  voice?: { fileId: string; durationMs?: number; sizeBytes?: string; mimeType?: string; transcript?: string };
  video?: { fileId: string; durationMs?: number; width?: number; height?: number; sizeBytes?: string; mimeType?: string; thumbnailFileId?: string };
  file?: { fileId: string; name: string; sizeBytes?: string; mimeType?: string };
  location?: { latitude?: number; longitude?: number; title?: string; address?: string };
  system?: SystemNotice;
  recalled?: { byUserId?: string; atMs?: string };
}

export interface Quote {
  seq?: string;
  messageId?: string;
  senderId?: string;
  preview?: string;
}

export interface Message {
  id: string;
  conversationId: string;
  seq: string;
  senderId?: string;
  senderDeviceId?: string;
  clientMsgId?: string;
  body?: MessageBody;
  serverTsMs?: string;
  replyTo?: Quote;
  groupLarge?: boolean;
  /** Until when its sender may recall it (Unix ms); "0" or absent: never. */
  recallUntilMs?: string;
}

export interface Conversation {
  id: string;
  kind: "direct" | "group";
  peerUserId?: string;
  lastSeq?: string;
  lastMessage?: Message;
  lastActivityMs?: string;
  title?: string;
  unreadCount?: string;
  readSeq?: string;
  pinned?: boolean;
  muted?: boolean;
  peerReadSeq?: string;
}

export interface Group {
  id: string;
  conversationId: string;
  name: string;
  description?: string;
  announcement?: string;
  ownerId: string;
  mutedAll?: boolean;
  memberCount?: number;
  maxMembers?: number;
  createdAtMs?: string;
  me?: Member;
}

export interface Member {
  userId: string;
  role: "owner" | "admin" | "member";
  mutedUntilMs?: string;
  joinedAtMs?: string;
}

export interface SendAck {
  messageId: string;
  conversationId: string;
  seq: string;
  serverTsMs: string;
  clientMsgId: string;
  duplicate?: boolean;
  recallUntilMs?: string;
}

export interface InboxEntry {
  message?: Message;
  social?: { requestReceived?: FriendRequest; friendAdded?: Profile; friendRemoved?: string; profileUpdated?: Profile };
  recalled?: { conversationId: string; seq: string; messageId?: string; byUserId?: string; atMs?: string };
  read?: { conversationId: string; userId: string; readSeq: string };
  settings?: { conversationId: string; pinned?: boolean; muted?: boolean };
  deleted?: { conversationId: string; seqs: string[] };
  membership?: { conversationId: string; seq: string };
  transcribed?: { conversationId: string; seq: string; messageId?: string; transcript?: string };
}

export interface ServerFrame {
  replyTo?: string;
  welcome?: { userId: string; deviceId: string; ackedCursor?: string; idleTimeoutSecs?: number; maxFrameBytes?: number; expiresAtMs?: string };
  /** The answer to an `auth` frame: the socket now lives until then. */
  session?: { expiresAtMs?: string };
  ack?: SendAck;
  push?: { cursor: string; entry?: InboxEntry; prev?: string };
  error?: { code: string; message: string };
  pong?: { clientTsMs?: string; serverTsMs?: string };
  resyncRequired?: { cursor?: string };
  caughtUp?: { cursor?: string };
  signal?: {
    presence?: { userId: string; online?: boolean; lastSeenMs?: string };
    typing?: { conversationId: string; userId: string };
  };
  groupMessage?: Message;
  groupHeads?: { heads?: { conversationId: string; lastSeq: string }[] };
}

/** One of my devices (GET /v1/devices); JSON leaves false fields out. */
export interface Device {
  deviceId: string;
  name?: string;
  createdAtMs?: string;
  lastActiveAtMs?: string;
  current?: boolean;
  signedIn?: boolean;
}
