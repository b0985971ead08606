//! What the files service reads from media before it stores them: an
//! image's size (upright, by its EXIF orientation), its thumbnails, and its
//! bytes without metadata (location, camera, times: what others download);
//! a voice recording's duration. Pure CPU work on bytes in memory, bounded
//! by the kinds' size limits and the decode limits below; the caller runs
//! it on a blocking thread.

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
/// the sum of its packets' (nothing is decoded).
pub fn duration_ms(bytes: Bytes) -> Result<u64, MediaError> {
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
    use symphonia::core::meta::MetadataOptions;

    let audio = |e: symphonia::core::errors::Error| MediaError::Audio(e.to_string());
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(audio)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| MediaError::Audio("no audio track".into()))?
        .clone();
    let time_base = track
        .time_base
        .ok_or_else(|| MediaError::Audio("no time base".into()))?;
    let ms = |ticks: u64| {
        time_base
            .calc_duration(symphonia::core::units::Duration::new(ticks))
            .map(|t| u64::try_from(t.as_micros() / 1000).unwrap_or(0))
    };
    if let Some(total) = track.duration.and_then(|d| ms(d.get()))
        && total > 0
    {
        return Ok(total);
    }
    // No length in the header (a browser's WebM recording has none): the
    // end of the last packet, or the sum of the packets' durations where
    // they carry no timestamps.
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
            Err(e) => return Err(audio(e)),
        };
        if packet.track_id == track.id {
            summed = summed.saturating_add(packet.dur.get());
            let start = u64::try_from(packet.pts.get()).unwrap_or(0);
            end = end.max(start.saturating_add(packet.dur.get()));
        }
    }
    let ticks = summed.max(end);
    match ms(ticks) {
        Some(total) if total > 0 => Ok(total),
        _ => Err(MediaError::Audio("no audio in it".into())),
    }
}
