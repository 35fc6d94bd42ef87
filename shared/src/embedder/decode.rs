//! Bytes to upright 8-bit RGB, the way Pillow's `exif_transpose` + `convert("RGB")` does it.
//!
//! JPEG goes through libjpeg-turbo (see [`super::jpeg`]), the decoder Pillow uses, so pixels
//! match the Python reference exactly. Other formats go through `image`.
//!
//! Every byte is hostile, so each image is decoded within [`DecodeLimits`]:
//! - the size is read from the header (for GIF also the first frame's) and checked against the
//!   pixel cap before any pixel buffer is allocated, so a decompression bomb fails fast;
//! - the decoders' own allocations are capped (`image`'s limits, libjpeg's `max_memory_to_use`);
//! - a deadline stops a decode that runs too long (libjpeg's progress monitor; for the other
//!   formats every read of compressed bytes checks the clock).
//!
//! Peak memory of one image is therefore at most [`PEAK_BYTES_PER_PIXEL`] × `MAX_IMAGE_PIXELS`
//! plus the compressed bytes and [`PEAK_FIXED_BYTES`] (docs/ingest.md derives it; a test
//! decodes the worst allowed images under that address-space limit).

use std::borrow::Cow;
use std::io::{BufRead, Cursor, Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use super::jpeg;

/// What one image may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Width × height above which an image is refused from its header (`MAX_IMAGE_PIXELS`).
    pub max_pixels: u64,
    /// Wall time for decoding one image (`IMAGE_DECODE_TIMEOUT_MS`).
    pub deadline: Duration,
}

impl DecodeLimits {
    pub(super) fn deadline_millis(&self) -> u64 {
        u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The decoders' own buffers per declared pixel, at most: `image` decodes to its native layout
/// (RGBA 16-bit is 8 bytes) and libjpeg keeps up to 8 bytes of coefficients in progressive
/// mode; both run under an allocation cap of this much (+ [`DECODER_FIXED_BYTES`]).
pub const DECODER_BYTES_PER_PIXEL: u64 = 8;
/// Peak bytes per pixel of the cap while one image is decoded and made RGB: the decoder's
/// buffers plus the 3-byte RGB copy (EXIF rotation makes a second RGB copy only after the
/// decoder's buffers are gone: 6 < 11).
pub const PEAK_BYTES_PER_PIXEL: u64 = DECODER_BYTES_PER_PIXEL + 3;
/// Allocations that do not grow with the pixel count (libjpeg's tables, zlib windows, resize
/// coefficients and the model-sized output), with headroom.
pub const PEAK_FIXED_BYTES: u64 = 32 << 20;

/// Decoders' buffers that do not grow with the pixel count (tables, zlib windows, strip buffers).
pub const DECODER_FIXED_BYTES: u64 = 16 << 20;

/// The most memory decoding an image of `pixels` pixels from `compressed_len` bytes can take (saturating).
pub fn peak_bytes(pixels: u64, compressed_len: usize) -> u64 {
    PEAK_BYTES_PER_PIXEL.saturating_mul(pixels).saturating_add(PEAK_FIXED_BYTES).saturating_add(compressed_len as u64)
}

/// The most memory decoding `bytes` can take: [`peak_bytes`] of the pixels its header declares
/// (for a GIF, the larger of the logical screen and the first frame), or of the cap when the
/// header cannot be read or declares more (such a file is refused before it allocates).
pub fn peak_bytes_of(bytes: &[u8], max_pixels: u64) -> u64 {
    let pixels = sniff_format(bytes)
        .and_then(|format| declared_sizes(bytes, format))
        .map(|sizes| sizes.iter().map(|&(w, h)| u64::from(w) * u64::from(h)).max().unwrap_or(0))
        .unwrap_or(max_pixels);
    peak_bytes(pixels.min(max_pixels), bytes.len())
}

/// The sizes a file declares before any pixel is decoded: the image's, and for a GIF also its
/// first frame's, which can be larger than the logical screen and is allocated at its own size.
fn declared_sizes(bytes: &[u8], format: SupportedFormat) -> Result<Vec<(u32, u32)>, ImageError> {
    let corrupt = |e: image::ImageError| ImageError::Corrupt { format: format.name(), message: e.to_string() };
    let size =
        ImageReader::with_format(Cursor::new(bytes), format.image_format()).into_dimensions().map_err(corrupt)?;
    let mut sizes = vec![size];
    if format == SupportedFormat::Gif {
        sizes.push(first_gif_frame(bytes)?);
    }
    Ok(sizes)
}

/// Formats the embedder decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportedFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
    Bmp,
    Tiff,
}

impl SupportedFormat {
    pub fn name(self) -> &'static str {
        match self {
            SupportedFormat::Jpeg => "JPEG",
            SupportedFormat::Png => "PNG",
            SupportedFormat::WebP => "WebP",
            SupportedFormat::Gif => "GIF",
            SupportedFormat::Bmp => "BMP",
            SupportedFormat::Tiff => "TIFF",
        }
    }

    /// The MIME type S3 objects of this format should carry.
    pub fn mime_type(self) -> &'static str {
        match self {
            SupportedFormat::Jpeg => "image/jpeg",
            SupportedFormat::Png => "image/png",
            SupportedFormat::WebP => "image/webp",
            SupportedFormat::Gif => "image/gif",
            SupportedFormat::Bmp => "image/bmp",
            SupportedFormat::Tiff => "image/tiff",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            SupportedFormat::Jpeg => ImageFormat::Jpeg,
            SupportedFormat::Png => ImageFormat::Png,
            SupportedFormat::WebP => ImageFormat::WebP,
            SupportedFormat::Gif => ImageFormat::Gif,
            SupportedFormat::Bmp => ImageFormat::Bmp,
            SupportedFormat::Tiff => ImageFormat::Tiff,
        }
    }
}

/// Why bytes could not be turned into an image. None of these is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the file is empty")]
    Empty,
    #[error("not an image: the first bytes match no known image format")]
    UnknownFormat,
    #[error("{format} images are not supported; use JPEG, PNG, WebP, GIF, BMP or TIFF")]
    UnsupportedFormat { format: &'static str },
    #[error("image is {width}x{height} = {} pixels, more than the limit of {max_pixels} (MAX_IMAGE_PIXELS)", *.width as u64 * *.height as u64)]
    TooLarge { width: u32, height: u32, max_pixels: u64 },
    #[error("corrupt or truncated {format} image: {message}")]
    Corrupt { format: &'static str, message: String },
    #[error("image is {width}x{height}: a side of 0 pixels holds nothing to embed")]
    ZeroSize { width: u32, height: u32 },
    #[error("image is {width}x{height}: too elongated to scale its short side to the model's input")]
    ExtremeAspectRatio { width: u32, height: u32 },
    #[error(
        "decoding the {format} image took longer than {millis} ms (IMAGE_DECODE_TIMEOUT_MS); the image was skipped"
    )]
    DeadlineExceeded { format: &'static str, millis: u64 },
    /// A bug in a decoder or in preprocessing, caught so that it costs only this image.
    #[error("decoding or preprocessing failed unexpectedly ({message}); the image was skipped")]
    Panicked { message: String },
}

/// Identifies the format from the magic bytes (never from a file name or content type).
pub fn sniff_format(bytes: &[u8]) -> Result<SupportedFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\xFF\xD8\xFF") {
        return Ok(SupportedFormat::Jpeg);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(SupportedFormat::Png);
    }
    if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return Ok(SupportedFormat::WebP);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(SupportedFormat::Gif);
    }
    if starts(b"BM") && bytes.len() >= 26 {
        return Ok(SupportedFormat::Bmp);
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Ok(SupportedFormat::Tiff);
    }
    if bytes.get(4..8) == Some(b"ftyp") {
        let brand = bytes.get(8..12).unwrap_or_default();
        let format = match brand {
            b"avif" | b"avis" => "AVIF",
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => "HEIC/HEIF",
            _ => "ISO media (video)",
        };
        return Err(ImageError::UnsupportedFormat { format });
    }
    let unsupported = [
        (&b"8BPS"[..], "PSD"),
        (b"\0\0\x01\0", "ICO"),
        (b"qoif", "QOI"),
        (b"\xFF\x0A", "JPEG XL"),
        (b"\0\0\0\x0CJXL ", "JPEG XL"),
        (b"%PDF", "PDF"),
        (b"<svg", "SVG"),
        (b"<?xml", "SVG/XML"),
    ];
    match unsupported.iter().find(|(magic, _)| starts(magic)) {
        Some((_, format)) => Err(ImageError::UnsupportedFormat { format }),
        None => Err(ImageError::UnknownFormat),
    }
}

/// A decoded, upright RGB image and where it came from.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub rgb: RgbImage,
    pub format: SupportedFormat,
    /// The image's own upright size (`rgb` is smaller when decoded at reduced scale).
    pub width: u32,
    pub height: u32,
}

/// Decodes `bytes` to upright RGB at full size within `limits`.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    decode_rgb_reduced(bytes, limits, None)
}

/// Whether the JPEG decoder runs libjpeg-turbo's SIMD code (see [`jpeg::simd_enabled`]).
pub fn jpeg_simd_enabled() -> bool {
    jpeg::simd_enabled()
}

/// Like [`decode_rgb`], but a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
/// scaling, far cheaper than decoding every pixel and resizing) as long as its short side stays
/// at least `min_short_side`. Other formats are always decoded at full size.
pub fn decode_rgb_reduced(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_short_side: Option<u32>,
) -> Result<DecodedImage, ImageError> {
    let format = sniff_format(bytes)?;
    let (rgb, (width, height)) = match format {
        SupportedFormat::Jpeg => jpeg::decode(bytes, limits, min_short_side)?,
        other => {
            let rgb = decode_with_image(bytes, other, limits)?;
            let size = rgb.dimensions();
            (rgb, size)
        }
    };
    let (rgb, swapped) = apply_orientation(exif_orientation(bytes), rgb);
    let (width, height) = if swapped { (height, width) } else { (width, height) };
    Ok(DecodedImage { rgb, format, width, height })
}

/// The text of a caught panic, if it carried one.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied())
}

/// The numerator n of libjpeg's n/8 output scale: the smallest of 1, 2, 4 that keeps the
/// short side at least `min_short_side`, else 8 (full size).
pub fn jpeg_scale_numerator(width: u32, height: u32, min_short_side: u32) -> u8 {
    let short = width.min(height) as u64;
    [1u8, 2, 4].into_iter().find(|&n| (short * n as u64).div_ceil(8) >= min_short_side as u64).unwrap_or(8)
}

/// The checks on a header's size, before anything of that size is allocated.
pub(super) fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        Err(ImageError::ZeroSize { width, height })
    } else if width as u64 * height as u64 > max_pixels {
        Err(ImageError::TooLarge { width, height, max_pixels })
    } else {
        Ok(())
    }
}

fn decode_with_image(bytes: &[u8], format: SupportedFormat, limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let started = Instant::now();
    let deadline = started + limits.deadline;
    let failed = |e: image::ImageError| {
        if Instant::now() > deadline {
            ImageError::DeadlineExceeded { format: format.name(), millis: limits.deadline_millis() }
        } else {
            ImageError::Corrupt { format: format.name(), message: e.to_string() }
        }
    };
    let bytes = match format {
        SupportedFormat::Png => without_png_chunk(bytes, *b"iCCP"),
        _ => Cow::Borrowed(bytes),
    };
    let mut declared = 0u64;
    for (width, height) in declared_sizes(&bytes, format)? {
        check_pixels(width, height, limits.max_pixels)?;
        declared = declared.max(u64::from(width) * u64::from(height));
    }
    let mut reader = ImageReader::with_format(DeadlineReader::new(&bytes, deadline), format.image_format());
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(DECODER_BYTES_PER_PIXEL.saturating_mul(declared).saturating_add(DECODER_FIXED_BYTES));
    reader.limits(image_limits);
    let decoded = reader.decode().map_err(failed)?;
    // The decoded size can differ from the header's (a GIF frame, a TIFF page): check it too.
    check_pixels(decoded.width(), decoded.height(), limits.max_pixels)?;
    Ok(to_rgb8(decoded))
}

/// The PNG without its `kind` chunks. The png decoder inflates an ICC profile (`iCCP`) eagerly,
/// up to its whole allocation limit: a 1 MB file can hold a profile that inflates to 1 GB.
/// Colour management is not part of the reference pipeline (`convert("RGB")` ignores the
/// profile), so the chunk is dropped unread. A malformed chunk list is left for the decoder to refuse.
fn without_png_chunk(png: &[u8], kind: [u8; 4]) -> Cow<'_, [u8]> {
    const SIGNATURE: usize = 8;
    let mut chunks = Vec::new();
    let mut at = SIGNATURE;
    while let Some(header) = png.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(end) = at.checked_add(12).and_then(|n| n.checked_add(len)).filter(|&end| end <= png.len()) else {
            break;
        };
        chunks.push((at..end, header[4..8] == kind));
        at = end;
    }
    if !chunks.iter().any(|(_, drop)| *drop) {
        return Cow::Borrowed(png);
    }
    let mut out = Vec::with_capacity(png.len());
    out.extend_from_slice(&png[..SIGNATURE]);
    for (range, drop) in chunks {
        if !drop {
            out.extend_from_slice(&png[range]);
        }
    }
    out.extend_from_slice(&png[at..]);
    Cow::Owned(out)
}

/// The size of a GIF's first frame (the one decoded), read from its image descriptor.
fn first_gif_frame(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let corrupt = |e: gif::DecodingError| ImageError::Corrupt { format: "GIF", message: e.to_string() };
    let mut options = gif::DecodeOptions::new();
    options.set_memory_limit(gif::MemoryLimit::Bytes(std::num::NonZeroU64::new(1 << 20).expect("non-zero")));
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(corrupt)?;
    match decoder.next_frame_info().map_err(corrupt)? {
        Some(frame) => Ok((u32::from(frame.width), u32::from(frame.height))),
        None => Err(ImageError::Corrupt { format: "GIF", message: "the file holds no frame".into() }),
    }
}

/// The compressed bytes, read through a clock: once the deadline passes every read fails, so
/// a decoder that is slow on hostile data stops at its next read.
struct DeadlineReader<'a> {
    inner: Cursor<&'a [u8]>,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    fn new(bytes: &'a [u8], deadline: Instant) -> Self {
        DeadlineReader { inner: Cursor::new(bytes), deadline }
    }

    fn check(&self) -> std::io::Result<()> {
        if Instant::now() > self.deadline {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "decode deadline passed"))
        } else {
            Ok(())
        }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl BufRead for DeadlineReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount)
    }
}

impl Seek for DeadlineReader<'_> {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.check()?;
        self.inner.seek(position)
    }
}

/// Pillow's `convert("RGB")`: alpha is dropped (not composited), grey is replicated,
/// and 16-bit samples keep their high byte (what Pillow does for 16-bit RGB PNGs; for
/// 16-bit grey the reference does the same because Pillow's own conversion clips).
fn to_rgb8(image: DynamicImage) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    // 16-bit: the high byte of each kept sample, read straight from the decoded buffer (a
    // 16-bit RGB copy first would add 6 bytes a pixel to the peak).
    let high_bytes = |samples: &[u16], channels: usize| -> RgbImage {
        let rgb = samples
            .chunks_exact(channels)
            .flat_map(|px| {
                let (r, g, b) = if channels >= 3 { (px[0], px[1], px[2]) } else { (px[0], px[0], px[0]) };
                [(r >> 8) as u8, (g >> 8) as u8, (b >> 8) as u8]
            })
            .collect();
        RgbImage::from_raw(w, h, rgb).expect("buffer size matches dimensions")
    };
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(i) => high_bytes(i.as_raw(), 1),
        DynamicImage::ImageLumaA16(i) => high_bytes(i.as_raw(), 2),
        DynamicImage::ImageRgb16(i) => high_bytes(i.as_raw(), 3),
        DynamicImage::ImageRgba16(i) => high_bytes(i.as_raw(), 4),
        other => other.into_rgb8(),
    }
}

/// The EXIF orientation of the primary image, if the file has a valid one.
pub fn exif_orientation(bytes: &[u8]) -> Option<Orientation> {
    exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .ok()
        .and_then(|exif| exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY).and_then(|f| f.value.get_uint(0)))
        .and_then(|v| u8::try_from(v).ok())
        .and_then(Orientation::from_exif)
}

/// Turns the image upright, as `ImageOps.exif_transpose` does; also says whether width and
/// height were swapped.
fn apply_orientation(orientation: Option<Orientation>, rgb: RgbImage) -> (RgbImage, bool) {
    match orientation {
        None | Some(Orientation::NoTransforms) => (rgb, false),
        Some(orientation) => {
            let swapped = matches!(
                orientation,
                Orientation::Rotate90
                    | Orientation::Rotate270
                    | Orientation::Rotate90FlipH
                    | Orientation::Rotate270FlipH
            );
            let mut image = DynamicImage::ImageRgb8(rgb);
            image.apply_orientation(orientation);
            (image.into_rgb8(), swapped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_uses_magic_bytes() {
        assert_eq!(sniff_format(b"\xFF\xD8\xFF\xE0rest"), Ok(SupportedFormat::Jpeg));
        assert_eq!(sniff_format(b"GIF89a...."), Ok(SupportedFormat::Gif));
        assert_eq!(sniff_format(b""), Err(ImageError::Empty));
        assert_eq!(sniff_format(b"hello world"), Err(ImageError::UnknownFormat));
        assert_eq!(
            sniff_format(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),
            Err(ImageError::UnsupportedFormat { format: "HEIC/HEIF" })
        );
    }

    #[test]
    fn dct_scale_keeps_the_short_side_above_the_minimum() {
        assert_eq!(jpeg_scale_numerator(4032, 3024, 448), 2); // 1008 x 756
        assert_eq!(jpeg_scale_numerator(4032, 3024, 378), 1); // 504 x 378
        assert_eq!(jpeg_scale_numerator(1024, 683, 448), 8); // 683 / 2 < 448: full size
        assert_eq!(jpeg_scale_numerator(2000, 300, 224), 8);
    }

    #[test]
    fn sixteen_bit_keeps_the_high_byte() {
        let wide = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![0x12ff, 0xff00]).unwrap();
        let rgb = to_rgb8(DynamicImage::ImageLuma16(wide));
        assert_eq!(rgb.into_raw(), vec![0x12, 0x12, 0x12, 0xff, 0xff, 0xff]);
    }
}
