//! Bytes to upright 8-bit RGB, the way Pillow's `exif_transpose` + `convert("RGB")` does it.
//!
//! JPEG goes through libjpeg-turbo's decoder (the `mozjpeg` crate), the decoder Pillow uses,
//! so pixels match the Python reference exactly. Other formats go through `image`.
//! The header is read first and the decoded-pixel cap enforced before any pixel buffer
//! is allocated, so a decompression bomb fails fast.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

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

/// Decodes `bytes` to upright RGB at full size, refusing images above `max_pixels` before decoding them.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<DecodedImage, ImageError> {
    decode_rgb_reduced(bytes, max_pixels, None)
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
    max_pixels: u64,
    min_short_side: Option<u32>,
) -> Result<DecodedImage, ImageError> {
    let format = sniff_format(bytes)?;
    let (rgb, (width, height)) = match format {
        SupportedFormat::Jpeg => jpeg::decode(bytes, max_pixels, min_short_side)?,
        other => {
            let rgb = decode_with_image(bytes, other, max_pixels)?;
            let size = rgb.dimensions();
            (rgb, size)
        }
    };
    let (rgb, swapped) = apply_exif_orientation(bytes, rgb);
    let (width, height) = if swapped { (height, width) } else { (width, height) };
    Ok(DecodedImage { rgb, format, width, height })
}

/// The numerator n of libjpeg's n/8 output scale: the smallest of 1, 2, 4 that keeps the
/// short side at least `min_short_side`, else 8 (full size).
pub fn jpeg_scale_numerator(width: u32, height: u32, min_short_side: u32) -> u8 {
    let short = width.min(height) as u64;
    [1u8, 2, 4].into_iter().find(|&n| (short * n as u64).div_ceil(8) >= min_short_side as u64).unwrap_or(8)
}

/// The checks on a header's size, before anything of that size is allocated.
fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        Err(ImageError::ZeroSize { width, height })
    } else if width as u64 * height as u64 > max_pixels {
        Err(ImageError::TooLarge { width, height, max_pixels })
    } else {
        Ok(())
    }
}

fn decode_with_image(bytes: &[u8], format: SupportedFormat, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let corrupt = |e: image::ImageError| ImageError::Corrupt { format: format.name(), message: e.to_string() };
    let reader = || ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let (width, height) = reader().into_dimensions().map_err(corrupt)?;
    check_pixels(width, height, max_pixels)?;
    let mut reader = reader();
    let mut limits = image::Limits::default();
    // Decoders may need more than the final buffer (RGBA + palette, 16-bit): allow 16 bytes a pixel.
    limits.max_alloc = Some(max_pixels.saturating_mul(16));
    reader.limits(limits);
    let decoded = reader.decode().map_err(corrupt)?;
    // The decoded size can differ from the header's (a GIF frame, a TIFF page): check it too.
    check_pixels(decoded.width(), decoded.height(), max_pixels)?;
    Ok(to_rgb8(decoded))
}

/// Pillow's `convert("RGB")`: alpha is dropped (not composited), grey is replicated,
/// and 16-bit samples keep their high byte (what Pillow does for 16-bit RGB PNGs; for
/// 16-bit grey the reference does the same because Pillow's own conversion clips).
fn to_rgb8(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let wide = image.into_rgb16();
            let (w, h) = wide.dimensions();
            RgbImage::from_raw(w, h, wide.into_raw().into_iter().map(|v| (v >> 8) as u8).collect())
                .expect("buffer size matches dimensions")
        }
        other => other.into_rgb8(),
    }
}

/// Turns the image upright according to its EXIF orientation, as `ImageOps.exif_transpose` does.
/// Also says whether width and height were swapped.
fn apply_exif_orientation(bytes: &[u8], rgb: RgbImage) -> (RgbImage, bool) {
    let orientation = exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .ok()
        .and_then(|exif| exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY).and_then(|f| f.value.get_uint(0)))
        .and_then(|v| u8::try_from(v).ok())
        .and_then(Orientation::from_exif);
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

/// JPEG through libjpeg-turbo, with Pillow's choices: ISLOW DCT, fancy upsampling,
/// Adobe CMYK inverted, CMYK to RGB with Pillow's formula, a truncated file is an error.
mod jpeg {
    use super::*;
    use mozjpeg::{ColorSpace, Decompress, Marker};
    use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JWRN_JPEG_EOF};

    const FORMAT: &str = "JPEG";

    /// The decoded pixels (reduced when `min_short_side` allows) and the full size.
    pub fn decode(
        bytes: &[u8],
        max_pixels: u64,
        min_short_side: Option<u32>,
    ) -> Result<(RgbImage, (u32, u32)), ImageError> {
        // libjpeg reports fatal errors by unwinding out of the C code (mozjpeg's documented model).
        match catch_unwind(AssertUnwindSafe(|| decode_unchecked(bytes, max_pixels, min_short_side))) {
            Ok(result) => result,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "libjpeg failed".to_string());
                Err(ImageError::Corrupt { format: FORMAT, message })
            }
        }
    }

    fn decode_unchecked(
        bytes: &[u8],
        max_pixels: u64,
        min_short_side: Option<u32>,
    ) -> Result<(RgbImage, (u32, u32)), ImageError> {
        let corrupt = |e: std::io::Error| ImageError::Corrupt { format: FORMAT, message: e.to_string() };
        let mut decompress = Decompress::with_err(strict_error_mgr())
            .with_markers(&[Marker::APP(14)])
            .from_mem(bytes)
            .map_err(corrupt)?;
        let (full_width, full_height) = (decompress.width() as u32, decompress.height() as u32);
        check_pixels(full_width, full_height, max_pixels)?;
        if let Some(min) = min_short_side {
            let numerator = jpeg_scale_numerator(full_width, full_height, min);
            if numerator < 8 {
                decompress.scale(numerator);
            }
        }
        let adobe = decompress.markers().any(|m| m.marker == Marker::APP(14) && m.data.starts_with(b"Adobe"));
        let (pixels, width, height): (Vec<u8>, usize, usize) = match decompress.color_space() {
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
                let mut started = decompress.to_colorspace(ColorSpace::JCS_CMYK).map_err(corrupt)?;
                let (w, h) = (started.width(), started.height());
                let cmyk: Vec<u8> = started.read_scanlines().map_err(corrupt)?;
                started.finish().map_err(corrupt)?;
                (cmyk_to_rgb(&cmyk, adobe), w, h)
            }
            _ => {
                let mut started = decompress.rgb().map_err(corrupt)?;
                let (w, h) = (started.width(), started.height());
                let rgb: Vec<u8> = started.read_scanlines().map_err(corrupt)?;
                started.finish().map_err(corrupt)?;
                (rgb, w, h)
            }
        };
        let rgb = RgbImage::from_raw(width as u32, height as u32, pixels)
            .ok_or_else(|| ImageError::Corrupt { format: FORMAT, message: "decoder returned a short buffer".into() })?;
        Ok((rgb, (full_width, full_height)))
    }

    /// Whether libjpeg-turbo was built with its SIMD code (x86_64: only when `nasm` was on the PATH
    /// at build time; without it mozjpeg-sys falls back to plain C silently, and decoding is about
    /// twice as slow). The answer is libjpeg's own: its internal `jsimd_can_idct_islow`.
    pub fn simd_enabled() -> bool {
        extern "C" {
            fn jsimd_can_idct_islow() -> std::os::raw::c_int;
        }
        // SAFETY: takes no arguments; it checks the CPU once and reports whether the SIMD IDCT is used.
        unsafe { jsimd_can_idct_islow() != 0 }
    }

    /// Pillow: Adobe files store CMYK inverted ("CMYK;I"); then R = (255-C)(255-K)/255 with its rounding.
    fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
        for px in cmyk.chunks_exact(4) {
            let v = |i: usize| if inverted { 255 - px[i] as u32 } else { px[i] as u32 };
            let nk = 255 - v(3);
            for c in 0..3 {
                let tmp = v(c) * nk + 128;
                let muldiv255 = ((tmp >> 8) + tmp) >> 8;
                rgb.push(nk.saturating_sub(muldiv255) as u8);
            }
        }
        rgb
    }

    /// libjpeg's standard error manager, except that fatal errors unwind with their message
    /// and a premature end of data is fatal too (libjpeg would pad the image with grey).
    fn strict_error_mgr() -> jpeg_error_mgr {
        // SAFETY: jpeg_std_error only fills in the plain-data struct it is given.
        let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { jpeg_std_error(&mut err) };
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }

    fn message(cinfo: &mut jpeg_common_struct) -> String {
        // SAFETY: libjpeg sets `err` before calling any handler; format_message writes
        // at most JMSG_LENGTH_MAX (80) bytes into the buffer.
        unsafe {
            let err = &*cinfo.err;
            match err.format_message {
                Some(format) => {
                    let buffer = [0u8; 80];
                    format(cinfo, &buffer);
                    let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
                    String::from_utf8_lossy(&buffer[..end]).into_owned()
                }
                None => format!("libjpeg error {}", err.msg_code),
            }
        }
    }

    extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
        std::panic::resume_unwind(Box::new(message(cinfo)));
    }

    extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: std::os::raw::c_int) {
        // SAFETY: as in `message`.
        let code = unsafe { (*cinfo.err).msg_code };
        if level < 0 && code == JWRN_JPEG_EOF as std::os::raw::c_int {
            std::panic::resume_unwind(Box::new("file is truncated (premature end of JPEG data)".to_string()));
        }
    }

    #[cfg(test)]
    mod tests {
        /// CI sets `REQUIRE_JPEG_SIMD=1` and fails without SIMD. Elsewhere a build without nasm
        /// decodes correctly, only about twice as slowly, so the test says so loudly and passes.
        #[test]
        #[cfg(target_arch = "x86_64")]
        fn the_jpeg_decoder_is_built_with_simd() {
            let fix = "libjpeg-turbo was built without SIMD: install nasm (apt-get install nasm), then \
                       `cargo clean -p mozjpeg-sys` and rebuild";
            let required = std::env::var("REQUIRE_JPEG_SIMD").is_ok_and(|v| v == "1");
            if required {
                assert!(super::simd_enabled(), "{fix}");
            } else if !super::simd_enabled() {
                eprintln!("\n!!! WARNING: {fix}. JPEG decoding works, about twice as slowly.\n");
            }
        }

        #[test]
        fn cmyk_formula_matches_pillow() {
            // Pillow 13: Image.new("CMYK", (1, 1), (10, 200, 30, 40)).convert("RGB") == (207, 46, 190)
            assert_eq!(super::cmyk_to_rgb(&[10, 200, 30, 40], false), vec![207, 46, 190]);
            assert_eq!(super::cmyk_to_rgb(&[245, 55, 225, 215], true), vec![207, 46, 190]);
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
