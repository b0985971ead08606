// Files: resumable uploads with tus-js-client (the edge speaks tus 1.0), and
// downloads. Downloads need the access token, which an <img> or <audio>
// cannot send, so their bytes are fetched and shown through object URLs
// (kept per file for the page's life: files never change).
import * as tus from "tus-js-client";
import { signal } from "@preact/signals";
import { accessToken, ApiError, enc } from "./api";

export type Kind = "file" | "image" | "voice" | "video" | "avatar";

/** The server's default size limits per kind (`[files]`): refused early here. */
export const LIMITS: Record<Kind, number> = {
  file: 200 * 1024 * 1024,
  image: 20 * 1024 * 1024,
  voice: 10 * 1024 * 1024,
  video: 200 * 1024 * 1024,
  avatar: 5 * 1024 * 1024,
};

/** An upload in progress (shown with a progress bar and a cancel button). */
export interface Upload {
  id: string;
  conversationId: string;
  name: string;
  kind: Kind;
  size: number;
  sent: number;
  /** A local preview of an image being sent. */
  preview?: string;
  error?: string;
  cancel: () => void;
}

export const uploads = signal<Upload[]>([]);

function update(id: string, change: Partial<Upload>) {
  uploads.value = uploads.value.map((u) => (u.id === id ? { ...u, ...change } : u));
}

export function forget(id: string) {
  const gone = uploads.value.find((u) => u.id === id);
  if (gone?.preview) URL.revokeObjectURL(gone.preview);
  uploads.value = uploads.value.filter((u) => u.id !== id);
}

/** The kind a picked file is sent as. */
export function kindOf(file: File): Kind {
  if (/^image\/(jpeg|png|gif|webp|bmp)$/.test(file.type) && file.size <= LIMITS.image) return "image";
  if (file.type.startsWith("video/") && file.size <= LIMITS.video) return "video";
  return "file";
}

/**
 * Uploads `blob` as a file of `kind`; resolves to its file id. An upload cut
 * short (a dropped connection, a reload) resumes from what the server kept:
 * tus-js-client remembers it by the file's fingerprint.
 */
export function upload(
  blob: Blob,
  name: string,
  kind: Kind,
  onProgress: (sent: number, total: number) => void,
): { done: Promise<string>; abort: () => void } {
  let job: tus.Upload | undefined;
  const done = new Promise<string>((resolve, reject) => {
    job = new tus.Upload(blob, {
      endpoint: "/v1/files/uploads",
      metadata: { filename: name, kind },
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
      onBeforeRequest: async (req) => {
        req.setHeader("Authorization", `Bearer ${await accessToken()}`);
      },
      onProgress: (sent, total) => onProgress(sent, total),
      onError: (e) => {
        const res = (e as tus.DetailedError).originalResponse;
        let message = e.message;
        try {
          message = JSON.parse(res?.getBody() ?? "").error?.message ?? message;
        } catch {
          // not JSON: keep tus's message
        }
        reject(new ApiError(String(res?.getStatus() ?? "network"), message, res?.getStatus() ?? 0));
      },
      onSuccess: () => resolve((job?.url ?? "").split("/").pop() ?? ""),
    });
    job.findPreviousUploads().then((previous) => {
      if (previous.length > 0) job?.resumeFromPreviousUpload(previous[0]);
      job?.start();
    }, reject);
  });
  return { done, abort: () => void job?.abort(true) };
}

/**
 * Uploads `file` to `conversationId` with a progress entry in `uploads`;
 * resolves to its file id, or undefined when cancelled or failed (the entry
 * then says why).
 */
export async function uploadTracked(conversationId: string, file: Blob, name: string, kind: Kind): Promise<string | undefined> {
  const id = `u-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  if (file.size > LIMITS[kind]) {
    uploads.value = [
      ...uploads.value,
      { id, conversationId, name, kind, size: file.size, sent: 0, error: "too_large", cancel: () => forget(id) },
    ];
    return undefined;
  }
  let cancelled = false;
  const job = upload(file, name, kind, (sent) => update(id, { sent }));
  const preview = kind === "image" ? URL.createObjectURL(file) : undefined;
  uploads.value = [
    ...uploads.value,
    {
      id,
      conversationId,
      name,
      kind,
      size: file.size,
      sent: 0,
      preview,
      cancel: () => {
        cancelled = true;
        job.abort();
        forget(id);
      },
    },
  ];
  try {
    const fileId = await job.done;
    forget(id);
    return cancelled ? undefined : fileId;
  } catch (e) {
    if (!cancelled) update(id, { error: e instanceof Error ? e.message : String(e) });
    return undefined;
  }
}

const urls = new Map<string, Promise<string>>();

/** An object URL of a file's bytes (or of its thumbnail `variant`). */
export function fileUrl(fileId: string, variant?: "small" | "large"): Promise<string> {
  const key = variant ? `${fileId}/${variant}` : fileId;
  let url = urls.get(key);
  if (!url) {
    url = (async () => {
      const path = `/v1/files/${enc(fileId)}${variant ? `/thumbnails/${variant}` : ""}`;
      const res = await fetch(path, { headers: { Authorization: `Bearer ${await accessToken()}` } });
      if (!res.ok) throw new ApiError(res.status === 404 ? "not_found" : "unavailable", res.statusText, res.status);
      return URL.createObjectURL(await res.blob());
    })();
    urls.set(key, url);
    url.catch(() => urls.delete(key));
  }
  return url;
}

/** Saves a file under its name, as the browser's download. */
export async function download(fileId: string, name: string) {
  const a = document.createElement("a");
  a.href = await fileUrl(fileId);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

/** The size and length of an image file, as the browser shows it (upright). */
export function imageSize(file: Blob): Promise<{ width: number; height: number }> {
  return new Promise((resolve) => {
    const img = new Image();
    const url = URL.createObjectURL(file);
    img.onload = () => {
      resolve({ width: img.naturalWidth, height: img.naturalHeight });
      URL.revokeObjectURL(url);
    };
    img.onerror = () => {
      resolve({ width: 0, height: 0 });
      URL.revokeObjectURL(url);
    };
    img.src = url;
  });
}

/**
 * What a video is, as the browser plays it: its size, its length and a
 * poster (a JPEG of a frame near its start); zeros and no poster when the
 * browser cannot play it.
 */
export function videoFacts(file: Blob): Promise<{ width: number; height: number; durationMs: number; poster?: Blob }> {
  return new Promise((resolve) => {
    const video = document.createElement("video");
    const url = URL.createObjectURL(file);
    const done = (facts: { width: number; height: number; durationMs: number; poster?: Blob }) => {
      URL.revokeObjectURL(url);
      resolve(facts);
    };
    const none = () => done({ width: 0, height: 0, durationMs: 0 });
    const timer = setTimeout(none, 10_000);
    video.muted = true;
    video.preload = "auto";
    video.onerror = () => {
      clearTimeout(timer);
      none();
    };
    // A recording (MediaRecorder's WebM) says no length until the end was
    // looked at: seek far, then to the poster's frame.
    let measuring = false;
    const posterTime = () => Math.min(0.5, Number.isFinite(video.duration) ? video.duration / 2 : 0);
    video.onloadedmetadata = () => {
      if (Number.isFinite(video.duration)) video.currentTime = posterTime();
      else {
        measuring = true;
        video.currentTime = 1e101;
      }
    };
    video.onseeked = () => {
      if (measuring) {
        measuring = false;
        video.currentTime = posterTime();
        return;
      }
      clearTimeout(timer);
      const width = video.videoWidth;
      const height = video.videoHeight;
      const durationMs = Number.isFinite(video.duration) ? Math.round(video.duration * 1000) : 0;
      const canvas = document.createElement("canvas");
      const scale = Math.min(1, 1280 / Math.max(width, height, 1));
      canvas.width = Math.max(1, Math.round(width * scale));
      canvas.height = Math.max(1, Math.round(height * scale));
      canvas.getContext("2d")?.drawImage(video, 0, 0, canvas.width, canvas.height);
      canvas.toBlob((poster) => done({ width, height, durationMs, poster: poster ?? undefined }), "image/jpeg", 0.85);
    };
    video.src = url;
  });
}

/** "1.5 MB", "830 KB", "12 B". */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(1)} GB`;
}

/** "0:07", "12:30". */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}
