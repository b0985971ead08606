// Media in the chat: images (a thumbnail in the bubble, the viewer on a
// click), voice messages (recorded here with MediaRecorder, played inline,
// their transcript under them), videos, file cards, and uploads in
// progress. Sending picks the kind from the file; the server checks it.
import { signal } from "@preact/signals";
import { useEffect, useRef, useState } from "preact/hooks";
import { download, fileUrl, forget, formatDuration, formatSize, imageSize, kindOf, uploadTracked, videoFacts, type Upload } from "./files";
import { t } from "./i18n";
import { displayName, reportError, sendMessage, transcripts, type Msg } from "./state";
import type { MessageBody } from "./types";
import { Icon, Modal } from "./ui";

/** The image or video open in the viewer. */
const viewing = signal<{ fileId: string; name: string; video?: boolean } | null>(null);

/** The object URL of a file (or thumbnail) once fetched; `failed` when it cannot be. */
function useFileUrl(fileId: string | undefined, variant?: "small" | "large") {
  const [state, setState] = useState<{ url?: string; failed: boolean }>({ failed: false });
  useEffect(() => {
    let live = true;
    setState({ failed: false });
    if (!fileId) return;
    fileUrl(fileId, variant).then(
      (url) => live && setState({ url, failed: false }),
      () => live && setState({ failed: true }),
    );
    return () => {
      live = false;
    };
  }, [fileId, variant]);
  return state;
}

/** The box an image of `width` by `height` is shown in: at most 260 by 260. */
function fit(width = 0, height = 0, max = 260) {
  if (!width || !height) return { width: max, height: Math.round(max * 0.75) };
  const scale = Math.min(1, max / Math.max(width, height));
  return { width: Math.max(40, Math.round(width * scale)), height: Math.max(40, Math.round(height * scale)) };
}

export function ImageBody({ m }: { m: Msg }) {
  const s = t();
  const image = m.body?.image;
  const { url, failed } = useFileUrl(image?.fileId, "small");
  if (!image) return null;
  const box = fit(image.width, image.height);
  const name = displayName(m.senderId);
  return (
    <button class="image-msg" style={{ width: `${box.width}px`, height: `${box.height}px` }} aria-label={s.openImage}
      onClick={() => (viewing.value = { fileId: image.fileId, name: `${name}.jpg` })}>
      {url ? <img src={url} alt={s.imageOf(name)} /> : <span class="media-missing">{failed ? s.fileUnavailable : ""}</span>}
    </button>
  );
}

export function VoiceBody({ m }: { m: Msg }) {
  const s = t();
  const voice = m.body?.voice;
  const { url, failed } = useFileUrl(voice?.fileId);
  if (!voice) return null;
  const transcript = voice.transcript || transcripts.value.get(`${m.conversationId}:${m.seq}`);
  return (
    <div class="voice-msg">
      <div class="voice-line">
        {url ? <audio controls preload="metadata" src={url} aria-label={s.voiceMessage} /> : <span class="attachment">{failed ? s.fileUnavailable : s.kinds.voice}</span>}
        <span class="duration">{formatDuration(Number(voice.durationMs ?? 0))}</span>
      </div>
      {transcript && <p class="transcript" aria-label={s.transcript}>{transcript}</p>}
    </div>
  );
}

export function VideoBody({ m }: { m: Msg }) {
  const s = t();
  const video = m.body?.video;
  const poster = useFileUrl(video?.thumbnailFileId || undefined, "small");
  if (!video) return null;
  const box = fit(video.width, video.height);
  return (
    <button class="image-msg video" style={{ width: `${box.width}px`, height: `${box.height}px` }} aria-label={s.playVideo}
      onClick={() => (viewing.value = { fileId: video.fileId, name: "video.mp4", video: true })}>
      {poster.url && <img src={poster.url} alt="" />}
      <span class="play">▶ {formatDuration(Number(video.durationMs ?? 0))}</span>
    </button>
  );
}

export function FileCard({ m }: { m: Msg }) {
  const s = t();
  const file = m.body?.file;
  if (!file) return null;
  const ext = (file.name.split(".").pop() ?? "").slice(0, 4).toUpperCase();
  return (
    <div class="file-card">
      <span class="file-icon" aria-hidden="true">{ext || "FILE"}</span>
      <span class="file-info">
        <strong title={file.name}>{file.name}</strong>
        <span>{formatSize(Number(file.sizeBytes ?? 0))}</span>
      </span>
      <button class="btn small" onClick={() => download(file.fileId, file.name).catch(reportError)} aria-label={`${s.download} ${file.name}`}>
        {s.download}
      </button>
    </div>
  );
}

/** The viewer of images and videos (one at a time, over everything). */
export function Viewer() {
  const s = t();
  const open = viewing.value;
  const large = useFileUrl(open && !open.video ? open.fileId : undefined, "large");
  const original = useFileUrl(open?.video ? open.fileId : undefined);
  if (!open) return null;
  const close = () => (viewing.value = null);
  return (
    <Modal title={open.video ? s.video : s.image} onClose={close}
      foot={<>
        <button class="btn" onClick={() => download(open.fileId, open.name).catch(reportError)}>{s.download}</button>
        <button class="btn primary" onClick={close}>{s.close}</button>
      </>}>
      <div class="viewer">
        {open.video
          ? original.url && <video controls autoplay src={original.url} />
          : large.url && <img src={large.url} alt={s.image} />}
        {(large.failed || original.failed) && <p class="attachment">{s.fileUnavailable}</p>}
      </div>
    </Modal>
  );
}

export function UploadRow({ u }: { u: Upload }) {
  const s = t();
  const percent = u.size ? Math.floor((u.sent / u.size) * 100) : 0;
  return (
    <div class="row mine" role="listitem" aria-busy={!u.error}>
      <div class="bubble upload">
        {u.preview && <img class="upload-preview" src={u.preview} alt="" />}
        <div class="upload-name">{u.name} · {formatSize(u.size)}</div>
        {u.error ? (
          <div class="failed-line">
            {s.uploadFailed}: {s.errors[u.error] ?? u.error}
            <button class="btn small" onClick={() => forget(u.id)}>{s.dismiss}</button>
          </div>
        ) : (
          <div class="upload-line">
            <progress max={100} value={percent} aria-label={`${s.uploading} ${u.name}`} />
            <span>{percent}%</span>
            <button class="icon-btn" aria-label={s.cancelUpload} onClick={u.cancel}><Icon name="close" /></button>
          </div>
        )}
      </div>
    </div>
  );
}

/** Uploads files to a conversation, each sent as a message once stored. */
export async function sendFiles(conversationId: string, files: File[], reply?: Msg) {
  await Promise.all(
    files.map(async (file) => {
      const kind = kindOf(file);
      const size = kind === "image" ? await imageSize(file) : undefined;
      const video = kind === "video" ? await videoFacts(file) : undefined;
      const fileId = await uploadTracked(conversationId, file, file.name || "file", kind);
      if (!fileId) return;
      // The poster: a frame the browser drew, sent as an image of its own.
      const thumbnailFileId = video?.poster
        ? await uploadTracked(conversationId, video.poster, "poster.jpg", "image")
        : undefined;
      let body: MessageBody;
      if (kind === "image") body = { image: { fileId, ...size } };
      else if (kind === "video" && video) {
        const { width, height, durationMs } = video;
        body = { video: { fileId, width, height, durationMs, ...(thumbnailFileId ? { thumbnailFileId } : {}) } };
      } else body = { file: { fileId, name: file.name || "file", sizeBytes: String(file.size) } };
      sendMessage(conversationId, body, reply);
    }),
  );
}

/** The microphone button, and the recording bar while it records. */
export function VoiceButton({ conversationId }: { conversationId: string }) {
  const s = t();
  const [recording, setRecording] = useState<{ started: number } | null>(null);
  const [now, setNow] = useState(Date.now());
  const recorder = useRef<MediaRecorder | null>(null);
  const send = useRef(false);
  useEffect(() => {
    if (!recording) return;
    const timer = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(timer);
  }, [recording]);
  useEffect(() => () => recorder.current?.stream.getTracks().forEach((tr) => tr.stop()), []);

  const start = async () => {
    let stream: MediaStream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      reportError(new Error(s.micDenied));
      return;
    }
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"].find((m) => MediaRecorder.isTypeSupported(m));
    const rec = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    const chunks: Blob[] = [];
    const started = Date.now();
    rec.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    rec.onstop = () => {
      stream.getTracks().forEach((tr) => tr.stop());
      recorder.current = null;
      setRecording(null);
      if (!send.current || chunks.length === 0) return;
      const blob = new Blob(chunks, { type: rec.mimeType });
      const durationMs = Date.now() - started;
      const ext = rec.mimeType.includes("ogg") ? "ogg" : rec.mimeType.includes("mp4") ? "m4a" : "webm";
      uploadTracked(conversationId, blob, `voice.${ext}`, "voice").then(
        (fileId) => fileId && sendMessage(conversationId, { voice: { fileId, durationMs } }),
        reportError,
      );
    };
    recorder.current = rec;
    send.current = false;
    rec.start(250);
    setRecording({ started });
    setNow(started);
  };
  const stop = (andSend: boolean) => {
    send.current = andSend;
    recorder.current?.stop();
  };

  if (recording) {
    return (
      <div class="recording" role="group" aria-label={s.recording}>
        <span class="rec-dot" aria-hidden="true" />
        <span class="rec-time" aria-live="off">{formatDuration(now - recording.started)}</span>
        <button class="icon-btn" aria-label={s.cancelRecording} onClick={() => stop(false)}><Icon name="close" /></button>
        <button class="send-btn" aria-label={s.stopAndSend} onClick={() => stop(true)}><Icon name="send" /></button>
      </div>
    );
  }
  return (
    <button class="icon-btn" aria-label={s.recordVoice} onClick={() => start().catch(reportError)}><Icon name="mic" /></button>
  );
}
