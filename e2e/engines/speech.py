#!/usr/bin/env python3
"""A small speech-to-text engine for natter's tests, with no model to
download: PyPI's pocketsphinx (its English model ships in the wheel) behind
the OpenAI-compatible `POST /v1/audio/transcriptions` that natter's speech
service speaks (multipart: `file`, `model`, `language`; answer
`{"text": ...}`). Audio is converted to 16 kHz mono PCM with sox (WAV, Ogg
Vorbis, FLAC, ...), else with ffmpeg (a browser's WebM/Opus or MP4/AAC
recording), as whisper.cpp's server converts with ffmpeg.

    python3 e2e/engines/speech.py --port 0   # prints "listening on <port>"

With `--fake TEXT` it hears nothing and answers TEXT for any audio it can
read, and only when the request's `language` is `--language` (when given):
how the tests send Chinese through the same interface without a Chinese
model.

Only for tests: it listens on 127.0.0.1 and serves one request at a time.
"""

import argparse
import email.parser
import email.policy
import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from pocketsphinx import Decoder

DECODER = None
FAKE = None
LANGUAGE = None


SOX = ["sox", "-", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw", "-"]
FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-ar", "16000", "-ac", "1", "-f", "s16le", "pipe:1"]


def pcm_of(audio: bytes) -> bytes:
    """16 kHz mono 16-bit PCM: through sox, else through ffmpeg."""
    try:
        return subprocess.run(SOX, input=audio, capture_output=True, check=True, timeout=60).stdout
    except subprocess.CalledProcessError as sox_failed:
        try:
            return subprocess.run(FFMPEG, input=audio, capture_output=True, check=True, timeout=60).stdout
        except FileNotFoundError:
            raise sox_failed from None


def transcribe(audio: bytes) -> str:
    global DECODER
    pcm = pcm_of(audio)
    if FAKE is not None:
        return FAKE
    if DECODER is None:
        DECODER = Decoder(samprate=16000, logfn="/dev/null")
    DECODER.start_utt()
    DECODER.process_raw(pcm, full_utt=True)
    DECODER.end_utt()
    hyp = DECODER.hyp()
    return hyp.hypstr if hyp else ""


class Handler(BaseHTTPRequestHandler):
    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path != "/v1/audio/transcriptions":
            return self.answer(404, {"error": {"message": "not found"}})
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        head = f"content-type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields = {}
        for part in form.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = part.get_payload(decode=True)
        if not fields.get("file"):
            return self.answer(400, {"error": {"message": "no file"}})
        language = (fields.get("language") or b"").decode()
        if LANGUAGE is not None and language != LANGUAGE:
            return self.answer(400, {"error": {"message": f"language {language!r}, not {LANGUAGE!r}"}})
        try:
            text = transcribe(fields["file"])
        except subprocess.CalledProcessError as e:
            return self.answer(400, {"error": {"message": f"cannot read the audio: {e.stderr[-200:]!r}"}})
        self.answer(200, {"text": text})

    def log_message(self, *args) -> None:
        sys.stderr.write("speech engine: " + (args[0] % args[1:]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fake", help="answer this text for any audio")
    parser.add_argument("--language", help="refuse requests without this language hint")
    args = parser.parse_args()
    global FAKE, LANGUAGE
    FAKE, LANGUAGE, port = args.fake, args.language, args.port
    if FAKE is None:
        global DECODER
        DECODER = Decoder(samprate=16000, logfn="/dev/null")
    server = HTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
