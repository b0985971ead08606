//! What the files service reads from media before it stores them: an
//! image's size (upright, by its EXIF orientation), its thumbnails, and its
//! bytes without metadata (location, camera, times: what others download);
//! a voice recording's duration; a video's size and duration, read from its
//! container as it streams past (nothing is decoded). Pure CPU work, on
//! bytes in memory bounded by the kinds' size limits and the decode limits
//! below, or on a [`Streamed`] reader; the caller runs it on a blocking
//! thread.

use std::io::Cursor;

use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use img_parts::{DynImage, ImageEXIF};

/// The widest or tallest image decoded.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels an image may have (a 50-megapixel camera's).
pub const MAX_PIXELS: u64 = 50_000_000;
/// The most memory one decode may take.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// JPEG quality of thumbnails.
const THUMBNAIL_QUALITY: u8 = 80;

/// A thumbnail size: the longest side at most `max_side` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    pub max_side: u32,
}

/// The thumbnails made of every image: a chat bubble's and a viewer's.
pub const VARIANTS: [Variant; 2] = [
    Variant {
        name: "small",
        max_side: 320,
    },
    Variant {
        name: "large",
        max_side: 1280,
    },
];

/// Why media cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the image cannot be read: {0}")]
    Image(String),
    #[error("the image is {width}x{height}, more than {MAX_PIXELS} pixels or {MAX_SIDE} on a side")]
    TooManyPixels { width: u32, height: u32 },
    #[error("the audio cannot be read: {0}")]
    Audio(String),
    #[error("the video cannot be read: {0}")]
    Video(String),
}

/// What an image is.
#[derive(Debug)]
pub struct Picture {
    /// Upright (the orientation applied).
    pub width: u32,
    pub height: u32,
    /// The bytes to store, when they differ from the upload's: metadata
    /// segments gone (but the orientation).
    pub cleaned: Option<Bytes>,
    pub thumbnails: Vec<Thumbnail>,
}

/// A JPEG thumbnail.
#[derive(Debug)]
pub struct Thumbnail {
    pub variant: Variant,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

fn image_error(e: impl std::fmt::Display) -> MediaError {
    MediaError::Image(e.to_string())
}

/// Reads, checks and thumbnails an image. A truncated or corrupt image, a
/// format this build does not decode, or one that would take more pixels
/// or memory than the limits is refused before its pixels are allocated
/// where the header tells.
pub fn picture(bytes: &Bytes) -> Result<Picture, MediaError> {
    let mut reader = ImageReader::new(Cursor::new(bytes.as_ref()))
        .with_guessed_format()
        .map_err(image_error)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(MediaError::TooManyPixels { width, height });
    }
    // The limits reach the decoders' own buffers, not the image's: check
    // what the pixels take before they are allocated.
    if decoder.total_bytes() > MAX_ALLOC {
        return Err(MediaError::TooManyPixels { width, height });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let pixels = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => MediaError::TooManyPixels { width, height },
        e => image_error(e),
    })?;
    // Turned upright thumbnail by thumbnail: turning the whole image would
    // take a second copy of it.
    let thumbnails = VARIANTS
        .iter()
        .map(|variant| thumbnail(&pixels, *variant, orientation))
        .collect::<Result<_, _>>()?;
    let sideways = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (width, height) = if sideways {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Picture {
        width,
        height,
        cleaned: without_metadata(bytes, orientation),
        thumbnails,
    })
}

/// A JPEG of `pixels` no larger than `variant` (never enlarged), turned
/// upright, over white where the image is transparent.
fn thumbnail(
    pixels: &DynamicImage,
    variant: Variant,
    orientation: Orientation,
) -> Result<Thumbnail, MediaError> {
    let longest = pixels.width().max(pixels.height());
    let mut small = if longest > variant.max_side {
        pixels.thumbnail(variant.max_side, variant.max_side)
    } else {
        pixels.clone()
    };
    small.apply_orientation(orientation);
    let rgb = if small.color().has_alpha() {
        let mut flat = image::RgbImage::new(small.width(), small.height());
        for (x, y, p) in small.to_rgba8().enumerate_pixels() {
            let [r, g, b, a] = p.0;
            let over =
                |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
            flat.put_pixel(x, y, image::Rgb([over(r), over(g), over(b)]));
        }
        flat
    } else {
        small.to_rgb8()
    };
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, THUMBNAIL_QUALITY)
        .encode_image(&rgb)
        .map_err(image_error)?;
    Ok(Thumbnail {
        variant,
        width: rgb.width(),
        height: rgb.height(),
        jpeg,
    })
}

/// The image without its metadata segments (EXIF but for the orientation,
/// XMP, IPTC, PNG text), losslessly: the pixels' bytes are untouched.
/// `None` when nothing was removed, or the format keeps none (GIF, BMP).
fn without_metadata(bytes: &Bytes, orientation: Orientation) -> Option<Bytes> {
    let mut image = DynImage::from_bytes(bytes.clone()).ok()??;
    let exif = (orientation != Orientation::NoTransforms)
        .then(|| Bytes::from(orientation_exif(orientation.to_exif())));
    image.set_exif(exif);
    match &mut image {
        DynImage::Jpeg(jpeg) => {
            // XMP and other APP1 data (the EXIF segment set above stays),
            // and IPTC (APP13).
            jpeg.segments_mut().retain(|s| {
                !((s.marker() == img_parts::jpeg::markers::APP1
                    && !s.contents().starts_with(b"Exif\0\0"))
                    || s.marker() == img_parts::jpeg::markers::APP13)
            });
        }
        DynImage::Png(png) => {
            for kind in [*b"tEXt", *b"zTXt", *b"iTXt", *b"tIME"] {
                png.remove_chunks_by_type(kind);
            }
        }
        DynImage::WebP(webp) => webp.remove_chunks_by_id(*b"XMP "),
    }
    let mut out = Vec::with_capacity(bytes.len());
    image.encoder().write_to(&mut out).ok()?;
    (out.as_slice() != bytes.as_ref()).then(|| Bytes::from(out))
}

/// A little-endian EXIF (TIFF) block with one entry: the orientation.
fn orientation_exif(value: u8) -> Vec<u8> {
    let mut exif = b"II\x2a\0\x08\0\0\0".to_vec();
    // One entry: tag 0x0112 (Orientation), type SHORT, count 1, the value.
    exif.extend_from_slice(&[1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, value, 0, 0, 0]);
    // No next directory.
    exif.extend_from_slice(&[0, 0, 0, 0]);
    exif
}

/// The duration of a voice recording in milliseconds, from its container
/// (Ogg, WebM/Matroska, MP4/M4A, MP3, WAV): its header's when it says, else
/// the end of its last packet (nothing is decoded).
pub fn duration_ms(bytes: Bytes) -> Result<u64, MediaError> {
    use symphonia::core::formats::TrackType;
    use symphonia::core::io::MediaSourceStream;

    let audio = |e: symphonia::core::errors::Error| MediaError::Audio(e.to_string());
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = probe(source).map_err(audio)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| MediaError::Audio("no audio track".into()))?
        .clone();
    match track_ms(format.as_mut(), &track).map_err(audio)? {
        Some(total) if total > 0 => Ok(total),
        _ => Err(MediaError::Audio("no audio in it".into())),
    }
}

/// What a video is, as far as its container tells without decoding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Video {
    /// As shown (an MP4's rotation applied); 0 when the container does not
    /// say.
    pub width: u32,
    pub height: u32,
    /// 0 when the container does not say.
    pub duration_ms: u64,
}

/// The size and duration of a video of `media_type` read from `content`:
/// MP4 and QuickTime through `mp4parse` (which reads the track headers'
/// rotation, as phones record portrait video), WebM and Matroska through
/// symphonia (a browser's recording has no duration in its header: its
/// packets are read to the end). Other containers are not read.
pub fn video(
    media_type: &str,
    content: impl std::io::Read + Send + Sync + 'static,
) -> Result<Video, MediaError> {
    match media_type {
        MP4 | QUICKTIME | M4V => mp4_video(content),
        WEBM | MATROSKA => matroska_video(content),
        _ => Ok(Video::default()),
    }
}

const MP4: &str = "video/mp4";
const QUICKTIME: &str = "video/quicktime";
const M4V: &str = "video/x-m4v";
const WEBM: &str = "video/webm";
const MATROSKA: &str = "video/x-matroska";

/// Whether [`video`] reads the container of `media_type`.
pub fn reads_video(media_type: &str) -> bool {
    [MP4, QUICKTIME, M4V, WEBM, MATROSKA].contains(&media_type)
}

fn mp4_video(mut content: impl std::io::Read) -> Result<Video, MediaError> {
    let context =
        mp4parse::read_mp4(&mut content).map_err(|e| MediaError::Video(format!("{e:?}")))?;
    let track = context
        .tracks
        .iter()
        .find(|t| t.track_type == mp4parse::TrackType::Video)
        .ok_or_else(|| MediaError::Video("no video track".into()))?;
    let mut video = Video::default();
    let sample = track.stsd.as_ref().and_then(|stsd| {
        stsd.descriptions.iter().find_map(|d| match d {
            mp4parse::SampleEntry::Video(v) => Some((u32::from(v.width), u32::from(v.height))),
            _ => None,
        })
    });
    if let Some(tkhd) = &track.tkhd {
        // The presentation size, 16.16 fixed point.
        (video.width, video.height) = (tkhd.width >> 16, tkhd.height >> 16);
        if video.width == 0 || video.height == 0 {
            (video.width, video.height) = sample.unwrap_or_default();
        }
        // A quarter turn either way (a = d = 0) shows it the other way up.
        if tkhd.matrix.a == 0 && tkhd.matrix.d == 0 && tkhd.matrix.b != 0 {
            (video.width, video.height) = (video.height, video.width);
        }
    } else {
        (video.width, video.height) = sample.unwrap_or_default();
    }
    if let (Some(duration), Some(scale)) = (track.duration, track.timescale)
        && scale.0 > 0
    {
        let ms = u128::from(duration.0) * 1000 / u128::from(scale.0);
        video.duration_ms = u64::try_from(ms).unwrap_or(u64::MAX);
    }
    Ok(video)
}

fn matroska_video(
    content: impl std::io::Read + Send + Sync + 'static,
) -> Result<Video, MediaError> {
    use symphonia::core::codecs::CodecParameters;
    use symphonia::core::formats::TrackType;
    use symphonia::core::io::{MediaSourceStream, ReadOnlySource};

    let fail = |e: symphonia::core::errors::Error| MediaError::Video(e.to_string());
    let source = MediaSourceStream::new(Box::new(ReadOnlySource::new(content)), Default::default());
    let mut format = probe(source).map_err(fail)?;
    let track = format
        .default_track(TrackType::Video)
        .ok_or_else(|| MediaError::Video("no video track".into()))?
        .clone();
    let mut video = Video::default();
    if let Some(CodecParameters::Video(params)) = &track.codec_params {
        video.width = params.width.map(u32::from).unwrap_or(0);
        video.height = params.height.map(u32::from).unwrap_or(0);
    }
    video.duration_ms = track_ms(format.as_mut(), &track)
        .map_err(fail)?
        .unwrap_or(0);
    Ok(video)
}

/// The container format of `source`.
fn probe(
    source: symphonia::core::io::MediaSourceStream<'static>,
) -> Result<Box<dyn symphonia::core::formats::FormatReader>, symphonia::core::errors::Error> {
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::meta::MetadataOptions;

    symphonia::default::get_probe().probe(
        &Hint::new(),
        source,
        FormatOptions::default(),
        MetadataOptions::default(),
    )
}

/// `track`'s length in milliseconds: its header's when it says, else the
/// end of its last packet, or the sum of its packets' durations where they
/// carry no timestamps; `None` without a time base.
fn track_ms(
    format: &mut dyn symphonia::core::formats::FormatReader,
    track: &symphonia::core::formats::Track,
) -> Result<Option<u64>, symphonia::core::errors::Error> {
    let Some(time_base) = track.time_base else {
        return Ok(None);
    };
    let ms = |ticks: u64| {
        time_base
            .calc_duration(symphonia::core::units::Duration::new(ticks))
            .map(|t| u64::try_from(t.as_micros() / 1000).unwrap_or(0))
    };
    if let Some(total) = track.duration.and_then(|d| ms(d.get()))
        && total > 0
    {
        return Ok(Some(total));
    }
    let (mut summed, mut end) = (0u64, 0u64);
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A recording a browser streamed out ends without saying so
            // (WebM clusters of unknown size): its end is the file's.
            Err(symphonia::core::errors::Error::IoError(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                break;
            }
            Err(e) => return Err(e),
        };
        if packet.track_id == track.id {
            summed = summed.saturating_add(packet.dur.get());
            let start = u64::try_from(packet.pts.get()).unwrap_or(0);
            end = end.max(start.saturating_add(packet.dur.get()));
        }
    }
    Ok(ms(summed.max(end)))
}

/// Content streamed in from elsewhere, read on a blocking thread: the
/// chunks a producing task sends, a few at a time.
pub struct Streamed {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Streamed {
    /// Reads what arrives on `chunks` until the sender goes.
    pub fn new(chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for Streamed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video_of(media_type: &str, bytes: &'static [u8]) -> Result<Video, MediaError> {
        video(media_type, Cursor::new(bytes))
    }

    #[test]
    fn an_mp4_shows_turned_as_its_track_header_says() {
        // 64x48 coded, a quarter turn in its track header, its index after
        // its frames (read through them); made by ffmpeg.
        let mp4 = include_bytes!("../tests/media/rotated.mp4");
        assert_eq!(
            video_of("video/mp4", mp4).unwrap(),
            Video {
                width: 48,
                height: 64,
                duration_ms: 2000
            }
        );
    }

    #[test]
    fn a_webm_says_its_size_and_length_with_or_without_a_duration() {
        let clip = include_bytes!("../tests/media/clip.webm");
        let video = video_of("video/webm", clip).unwrap();
        assert_eq!((video.width, video.height), (64, 48));
        assert!((1900..=2100).contains(&video.duration_ms), "{video:?}");
        // Written to a pipe, as a browser streams a recording out: no
        // duration in its header, clusters of unknown size.
        let live = include_bytes!("../tests/media/live.webm");
        let video = video_of("video/webm", live).unwrap();
        assert_eq!((video.width, video.height), (80, 60));
        assert!((2800..=3100).contains(&video.duration_ms), "{video:?}");
    }

    #[test]
    fn bytes_that_are_not_a_video_are_refused_and_other_containers_not_read() {
        let mp4 = include_bytes!("../tests/media/rotated.mp4");
        assert!(video_of("video/mp4", &mp4[..200]).is_err());
        assert!(video_of("video/webm", b"\x1a\x45\xdf\xa3 not matroska").is_err());
        assert_eq!(
            video_of("video/x-msvideo", b"RIFF....AVI ").unwrap(),
            Video::default()
        );
    }
}
