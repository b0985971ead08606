//! Files through the edge: a tus client for uploads, downloads, and bytes
//! that sniff as a given type.

use reqwest::StatusCode;

use crate::{System, User};

/// A real PNG image of noise (it hardly compresses), at least `len` bytes
/// (more than one chunk of the edge's 512 KiB when large); its size tells
/// images apart.
pub fn png(len: usize) -> Vec<u8> {
    let side = ((len as f64 / 3.0).sqrt().ceil() as u32).max(2);
    let mut state = (len as u32).wrapping_mul(2_654_435_761) | 1;
    let pixels = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut bytes = Vec::new();
    pixels
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encode a PNG");
    bytes
}

/// A WAV recording of `ms` milliseconds (8 kHz, 16-bit mono, a tone).
pub fn wav(ms: u32) -> Vec<u8> {
    let samples = 8 * ms;
    let data = samples * 2;
    let mut bytes = Vec::with_capacity(44 + data as usize);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&8000u32.to_le_bytes());
    bytes.extend_from_slice(&16_000u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data.to_le_bytes());
    for i in 0..samples {
        let v = ((i as f32 * 0.3).sin() * 8000.0) as i16;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// Bytes that sniff as an MP4 video, `len` long.
pub fn mp4(len: usize) -> Vec<u8> {
    padded(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2", len)
}

/// A real MP4 made by ffmpeg: 64x48 coded, turned a quarter in its track
/// header (shown 48x64), 2 s long, its index after its frames.
pub const TURNED_MP4: &[u8] = include_bytes!("../../services/files/tests/media/rotated.mp4");

/// Bytes that sniff as a PDF document, `len` long.
pub fn pdf(len: usize) -> Vec<u8> {
    padded(b"%PDF-1.7\n", len)
}

fn padded(magic: &[u8], len: usize) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend((0..len.saturating_sub(magic.len())).map(|i| (i % 251) as u8));
    bytes
}

/// Base64 as tus metadata wants it.
pub fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A tus client of the edge's uploads, and downloads.
pub struct Files {
    pub http: reqwest::Client,
    pub base: String,
}

impl Files {
    /// Talks to `system`'s edge.
    pub fn new(system: &System) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: system.api().base().to_owned(),
        }
    }

    /// A request with tus's version header.
    pub fn tus(&self, method: reqwest::Method, path: &str, user: &User) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&user.token)
            .header("tus-resumable", "1.0.0")
    }

    /// Creates an upload; its path.
    pub async fn create(
        &self,
        user: &User,
        name: &str,
        kind: &str,
        length: usize,
    ) -> anyhow::Result<String> {
        let response = self
            .tus(reqwest::Method::POST, "/v1/files/uploads", user)
            .header("upload-length", length.to_string())
            .header(
                "upload-metadata",
                format!("filename {},kind {}", b64(name), b64(kind)),
            )
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "create: {}",
            response.status()
        );
        let location = response.headers()["location"].to_str()?.to_owned();
        anyhow::ensure!(response.headers().contains_key("upload-expires"));
        Ok(location)
    }

    /// The upload's offset (HEAD).
    pub async fn offset(&self, user: &User, upload: &str) -> anyhow::Result<u64> {
        let response = self.tus(reqwest::Method::HEAD, upload, user).send().await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "head: {}",
            response.status()
        );
        Ok(response.headers()["upload-offset"].to_str()?.parse()?)
    }

    /// Bytes at `offset` (PATCH).
    pub async fn patch(
        &self,
        user: &User,
        upload: &str,
        offset: u64,
        body: reqwest::Body,
    ) -> reqwest::Result<reqwest::Response> {
        self.tus(reqwest::Method::PATCH, upload, user)
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
    }

    /// A download (or any GET) with extra headers.
    pub async fn get(
        &self,
        user: Option<&User>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(user) = user {
            request = request.bearer_auth(&user.token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.send().await?)
    }
}

/// The download path of an upload's file.
pub fn file_path(upload: &str) -> String {
    upload.replace("/v1/files/uploads/", "/v1/files/")
}

impl Files {
    /// Uploads `bytes` whole as a file of `kind`; its file id.
    pub async fn upload(
        &self,
        user: &User,
        name: &str,
        kind: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<String> {
        let upload = self.create(user, name, kind, bytes.len()).await?;
        let response = self.patch(user, &upload, 0, bytes.into()).await?;
        anyhow::ensure!(
            response.status() == StatusCode::NO_CONTENT,
            "upload of {name}: {}",
            response.status()
        );
        Ok(upload.rsplit('/').next().unwrap_or_default().to_owned())
    }
}
