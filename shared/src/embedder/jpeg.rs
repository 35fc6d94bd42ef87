//! JPEG through libjpeg-turbo (`mozjpeg-sys`), the decoder Pillow uses, with Pillow's choices:
//! ISLOW DCT, fancy upsampling, Adobe CMYK inverted, CMYK to RGB with Pillow's formula, and a
//! truncated file is an error.
//!
//! The decompressor is driven directly (not through the `mozjpeg` wrapper) so that a hostile
//! file meets three limits inside libjpeg itself: a scan limit and a deadline, both checked by
//! libjpeg's progress monitor on every scan and every row of coefficients, and a cap on
//! libjpeg's own memory of 8 bytes a pixel (`max_memory_to_use`; libjpeg has no backing store
//! here, so a file that needs more fails instead of allocating it).

use std::os::raw::{c_int, c_long, c_uint, c_ulong};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use image::RgbImage;
use mozjpeg_sys::*;

use super::decode::{
    check_pixels, jpeg_scale_numerator, panic_message, DecodeLimits, ImageError, DECODER_BYTES_PER_PIXEL,
    DECODER_FIXED_BYTES,
};

const FORMAT: &str = "JPEG";

/// More scans than any encoder writes (progressive files have about 10; mozjpeg's up to ~20).
/// A file with thousands of tiny scans makes libjpeg redo the whole image per scan.
pub const MAX_SCANS: c_int = 100;

/// The decoded pixels (at reduced scale when `min_short_side` allows) and the full size.
pub fn decode(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_short_side: Option<u32>,
) -> Result<(RgbImage, (u32, u32)), ImageError> {
    // libjpeg reports fatal errors by unwinding out of the C code (see `error_exit`); the
    // decompressor is destroyed by `Drop` while the panic unwinds.
    catch_unwind(AssertUnwindSafe(|| decode_unchecked(bytes, limits, min_short_side))).unwrap_or_else(|payload| {
        if payload.is::<DeadlinePassed>() {
            return Err(ImageError::DeadlineExceeded { format: FORMAT, millis: limits.deadline_millis() });
        }
        let message = panic_message(&*payload).unwrap_or("libjpeg failed").to_string();
        Err(ImageError::Corrupt { format: FORMAT, message })
    })
}

fn decode_unchecked(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_short_side: Option<u32>,
) -> Result<(RgbImage, (u32, u32)), ImageError> {
    let size = c_ulong::try_from(bytes.len())
        .map_err(|_| ImageError::Corrupt { format: FORMAT, message: "file too large".into() })?;
    let mut d = Decompressor::new(Instant::now() + limits.deadline);
    let cinfo = &mut d.cinfo;
    // SAFETY: `cinfo` was created by `Decompressor::new`; `bytes` outlives it (dropped at the end
    // of this function). Errors unwind out of these calls and are caught in `decode`.
    unsafe {
        jpeg_mem_src(cinfo, bytes.as_ptr(), size);
        jpeg_save_markers(cinfo, 0xEE, 0xFFFF); // APP14: Adobe's transform flag (CMYK inverted)
        jpeg_read_header(cinfo, 1);
    }
    let (width, height) = (cinfo.image_width, cinfo.image_height);
    check_pixels(width, height, limits.max_pixels)?;
    // Progressive files keep every DCT coefficient: 2 bytes × up to 4 components a pixel. A file
    // whose sampling factors pad it far past its size needs more, and is refused.
    let memory = DECODER_BYTES_PER_PIXEL
        .saturating_mul(u64::from(width) * u64::from(height))
        .saturating_add(DECODER_FIXED_BYTES);
    // SAFETY: `mem` was set by jpeg_create_decompress; nothing large is allocated before start.
    unsafe { (*cinfo.common.mem).max_memory_to_use = c_long::try_from(memory).unwrap_or(c_long::MAX) };
    if let Some(min) = min_short_side {
        cinfo.scale_num = c_uint::from(jpeg_scale_numerator(width, height, min));
        cinfo.scale_denom = 8;
    }
    let cmyk = matches!(cinfo.jpeg_color_space, JCS_CMYK | JCS_YCCK);
    let adobe = cmyk && d.has_adobe_marker();
    let cinfo = &mut d.cinfo;
    cinfo.out_color_space = if cmyk { JCS_CMYK } else { JCS_RGB };
    // SAFETY: as above.
    unsafe { jpeg_start_decompress(cinfo) };
    let (out_w, out_h) = (cinfo.output_width as usize, cinfo.output_height as usize);
    let channels = cinfo.output_components as usize;
    let row_bytes = out_w * channels;
    let mut rgb = vec![0u8; out_w * out_h * 3];
    let mut row = vec![0u8; row_bytes];
    while (cinfo.output_scanline as usize) < out_h {
        let y = cinfo.output_scanline as usize;
        let mut rows = [row.as_mut_ptr()];
        // SAFETY: one row pointer to `row_bytes` writable bytes, and max_lines = 1.
        let read = unsafe { jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), 1) };
        if read != 1 {
            return Err(ImageError::Corrupt {
                format: FORMAT,
                message: "the decoder stopped before the last row".into(),
            });
        }
        let out = &mut rgb[y * out_w * 3..(y + 1) * out_w * 3];
        if cmyk {
            cmyk_to_rgb(&row, adobe, out);
        } else {
            out.copy_from_slice(&row);
        }
    }
    // SAFETY: all rows were read.
    unsafe { jpeg_finish_decompress(cinfo) };
    let image = RgbImage::from_raw(out_w as u32, out_h as u32, rgb)
        .ok_or_else(|| ImageError::Corrupt { format: FORMAT, message: "decoder returned a short buffer".into() })?;
    Ok((image, (width, height)))
}

/// One libjpeg decompressor with its error manager and progress monitor, at stable addresses
/// (libjpeg keeps pointers to both), destroyed on drop even while a libjpeg error unwinds.
struct Decompressor {
    cinfo: jpeg_decompress_struct,
    err: jpeg_error_mgr,
    monitor: Monitor,
}

/// libjpeg's progress manager first, so that the pointer libjpeg hands back is also ours.
#[repr(C)]
struct Monitor {
    mgr: jpeg_progress_mgr,
    deadline: Instant,
}

impl Decompressor {
    fn new(deadline: Instant) -> Box<Self> {
        // SAFETY: these are plain C structs for which all-zero is the state libjpeg expects
        // before `jpeg_std_error` / `jpeg_create_decompress` fill them in.
        let mut d: Box<Decompressor> = Box::new(Decompressor {
            cinfo: unsafe { std::mem::zeroed() },
            err: unsafe { std::mem::zeroed() },
            monitor: Monitor { mgr: unsafe { std::mem::zeroed() }, deadline },
        });
        // SAFETY: `d` is boxed, so the pointers stored in `cinfo` stay valid for its life.
        unsafe {
            jpeg_std_error(&mut d.err);
            d.err.error_exit = Some(error_exit);
            d.err.emit_message = Some(emit_message);
            d.cinfo.common.err = &mut d.err;
            jpeg_create_decompress(&mut d.cinfo);
            d.monitor.mgr.progress_monitor = Some(progress_monitor);
            d.cinfo.common.progress = &mut d.monitor.mgr;
        }
        d
    }

    fn has_adobe_marker(&self) -> bool {
        let mut marker = self.cinfo.marker_list;
        // SAFETY: libjpeg's saved-marker list: `data_length` bytes at `data`, until a null `next`.
        unsafe {
            while let Some(m) = marker.as_ref() {
                let data = std::slice::from_raw_parts(m.data, m.data_length as usize);
                if m.marker == 0xEE && data.starts_with(b"Adobe") {
                    return true;
                }
                marker = m.next;
            }
        }
        false
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: created in `new`; destroying is allowed in any state, also after an error.
        unsafe { jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// What the progress monitor unwinds with when time is up (other stops carry their message).
struct DeadlinePassed;

/// Called by libjpeg for every row of coefficients it absorbs and every scan it starts.
extern "C-unwind" fn progress_monitor(cinfo: &mut jpeg_common_struct) {
    // SAFETY: only decompressors are created here, and `progress` points at our `Monitor`.
    let (scan, monitor) = unsafe {
        let d = &*(cinfo as *const jpeg_common_struct as *const jpeg_decompress_struct);
        (d.input_scan_number, &*(cinfo.progress as *const Monitor))
    };
    if scan > MAX_SCANS {
        std::panic::resume_unwind(Box::new(format!(
            "more than {MAX_SCANS} scans (a normal progressive JPEG has about 10)"
        )));
    }
    if Instant::now() > monitor.deadline {
        std::panic::resume_unwind(Box::new(DeadlinePassed));
    }
}

/// Whether libjpeg-turbo was built with its SIMD code (x86_64: only when `nasm` was on the PATH
/// at build time; without it mozjpeg-sys falls back to plain C silently, and decoding is about
/// twice as slow). The answer is libjpeg's own: its internal `jsimd_can_idct_islow`.
pub fn simd_enabled() -> bool {
    extern "C" {
        fn jsimd_can_idct_islow() -> c_int;
    }
    // SAFETY: takes no arguments; it checks the CPU once and reports whether the SIMD IDCT is used.
    unsafe { jsimd_can_idct_islow() != 0 }
}

/// Pillow: Adobe files store CMYK inverted ("CMYK;I"); then R = (255-C)(255-K)/255 with its rounding.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool, rgb: &mut [u8]) {
    for (px, out) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let v = |i: usize| if inverted { 255 - px[i] as u32 } else { px[i] as u32 };
        let nk = 255 - v(3);
        for (c, o) in out.iter_mut().enumerate() {
            let tmp = v(c) * nk + 128;
            let muldiv255 = ((tmp >> 8) + tmp) >> 8;
            *o = nk.saturating_sub(muldiv255) as u8;
        }
    }
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

/// Fatal errors unwind with their message (a libjpeg memory-limit failure says "Backing store not supported").
extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    // SAFETY: as in `message`.
    let code = unsafe { (*cinfo.err).msg_code };
    let text = if code == JERR_NO_BACKING_STORE as c_int || code == JERR_OUT_OF_MEMORY as c_int {
        "the image needs more decoder memory than its size allows (MAX_IMAGE_PIXELS)".to_string()
    } else {
        message(cinfo)
    };
    std::panic::resume_unwind(Box::new(text));
}

/// Warnings pass, except a premature end of data, which is fatal (libjpeg would pad with grey).
extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: as in `message`.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
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
        let mut rgb = [0u8; 3];
        super::cmyk_to_rgb(&[10, 200, 30, 40], false, &mut rgb);
        assert_eq!(rgb, [207, 46, 190]);
        super::cmyk_to_rgb(&[245, 55, 225, 215], true, &mut rgb);
        assert_eq!(rgb, [207, 46, 190]);
    }
}
