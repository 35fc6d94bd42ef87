//! Hostile images, made byte by byte so that anyone can regenerate them (`cargo run -p tests
//! --bin make-hostile-images DIR`) and the tests need no binary blobs. Each says what ingest
//! must do with it: embed it (it is a valid, if unusual, image) or skip it with a reason.

use std::io::Cursor;

use shared::embedder::bundle::{Interpolation, PreprocessConfig, ResizeMode};
use shared::embedder::decode::{decode_rgb, DecodeLimits};
use shared::embedder::preprocess::Preprocessor;

/// Decodes and fits `bytes` as ingest prepares an image (224 × 224, shortest side, center crop),
/// without the model: the image's size, or why it was refused.
pub fn prepare(bytes: &[u8], limits: &DecodeLimits) -> Result<(u32, u32), String> {
    let preprocessor = Preprocessor::new(PreprocessConfig {
        height: 224,
        width: 224,
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: Interpolation::Bicubic,
        resize_mode: ResizeMode::Shortest,
        fill_color: 0,
    });
    let decoded = decode_rgb(bytes, limits).map_err(|e| e.to_string())?;
    preprocessor.fit(&decoded.rgb).map_err(|e| e.to_string())?;
    Ok((decoded.width, decoded.height))
}

/// What ingest must do with a hostile file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A valid image: embedded like any other.
    Embedded,
    /// Refused with a reason that contains this text.
    Skipped(&'static str),
}

/// One hostile file.
pub struct Hostile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

impl Hostile {
    /// Checks an outcome (the image's size, or the skip reason) against [`Hostile::expect`].
    pub fn check(&self, outcome: Result<(u32, u32), String>) {
        match (self.expect, outcome) {
            (Expect::Embedded, Ok(_)) => {}
            (Expect::Skipped(why), Err(reason)) => {
                assert!(reason.contains(why), "{}: skipped, but the reason {reason:?} does not say {why:?}", self.name)
            }
            (expect, outcome) => panic!("{}: expected {expect:?}, got {outcome:?}", self.name),
        }
    }
}

/// All hostile files whose outcome does not depend on the pixel cap beyond the default
/// (100 MP). `big` adds the 100-megapixel CMYK progressive JPEG (about 2 MB, 10 s to make).
pub fn all(big: bool) -> Vec<Hostile> {
    let mut files = vec![
        Hostile { name: "gif-zero-canvas.gif", bytes: gif_with_screen(0, 0), expect: Expect::Skipped("0 pixels") },
        Hostile {
            name: "gif-frame-over-canvas.gif",
            bytes: gif_frame_over_canvas(60_000, 60_000),
            expect: Expect::Skipped("more than the limit"),
        },
        Hostile {
            name: "gif-frame-larger-than-small-canvas.gif",
            bytes: gif_frame_over_canvas(64, 64),
            expect: Expect::Embedded,
        },
        Hostile {
            name: "gif-truncated-second-frame.gif",
            bytes: gif_truncated_second_frame(),
            expect: Expect::Embedded,
        },
        Hostile { name: "png-1x10M.png", bytes: png_grey(1, 10_000_000), expect: Expect::Embedded },
        Hostile { name: "png-10Mx1.png", bytes: png_grey(10_000_000, 1), expect: Expect::Embedded },
        Hostile {
            name: "png-1x19173962.png",
            bytes: png_grey(1, 19_173_962),
            expect: Expect::Skipped("too elongated"),
        },
        Hostile { name: "tiff-1x10M.tif", bytes: tiff_grey(1, 10_000_000), expect: Expect::Embedded },
        // The BMP decoder refuses sides over 65,535 pixels from the header.
        Hostile { name: "bmp-1x10M.bmp", bytes: bmp_grey(1, 10_000_000), expect: Expect::Skipped("65535") },
        Hostile { name: "bmp-10Mx1.bmp", bytes: bmp_grey(10_000_000, 1), expect: Expect::Skipped("65535") },
        Hostile { name: "jpeg-5000-scans.jpg", bytes: jpeg_many_scans(5000), expect: Expect::Skipped("scans") },
        Hostile { name: "apng-3-frames.png", bytes: apng(), expect: Expect::Embedded },
        Hostile { name: "tiff-2-pages.tif", bytes: tiff_two_pages(), expect: Expect::Embedded },
        Hostile { name: "webp-animated.webp", bytes: animated_webp(), expect: Expect::Embedded },
        Hostile { name: "png-huge-iccp.png", bytes: png_with_bomb_chunk(*b"iCCP"), expect: Expect::Embedded },
        Hostile { name: "png-huge-ztxt.png", bytes: png_with_bomb_chunk(*b"zTXt"), expect: Expect::Embedded },
    ];
    if big {
        files.push(Hostile {
            name: "jpeg-cmyk-progressive-100MP.jpg",
            bytes: cmyk_progressive_100mp().to_vec(),
            expect: Expect::Embedded,
        });
    }
    files
}

/// A smooth grey gradient (so that it is not one flat colour, and compresses well).
pub fn gradient(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 4096) % 256) as u8).collect()
}

fn gif_frames(width: u16, height: u16, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let palette: Vec<u8> = (0..=255u8).flat_map(|v| [v, v / 2, 255 - v]).collect();
        let mut encoder = gif::Encoder::new(&mut out, width, height, &palette).expect("gif header");
        encoder.set_repeat(gif::Repeat::Infinite).expect("gif loop");
        for f in 0..frames {
            let pixels: Vec<u8> = (0..width as usize * height as usize).map(|i| ((i + f * 40) % 256) as u8).collect();
            let mut frame = gif::Frame::from_indexed_pixels(width, height, pixels, None);
            frame.delay = 10;
            encoder.write_frame(&frame).expect("gif frame");
        }
    }
    out
}

/// A valid 16×16 GIF whose logical screen says `width` × `height`.
fn gif_with_screen(width: u16, height: u16) -> Vec<u8> {
    let mut gif = gif_frames(16, 16, 1);
    gif[6..8].copy_from_slice(&width.to_le_bytes());
    gif[8..10].copy_from_slice(&height.to_le_bytes());
    gif
}

/// An 8×8 logical screen whose first frame says it is `width` × `height`.
fn gif_frame_over_canvas(width: u16, height: u16) -> Vec<u8> {
    let mut gif = gif_frames(width.min(64), height.min(64), 1);
    gif[6..10].copy_from_slice(&[8, 0, 8, 0]);
    let descriptor = image_descriptor(&gif).expect("an image descriptor");
    gif[descriptor + 5..descriptor + 7].copy_from_slice(&width.to_le_bytes());
    gif[descriptor + 7..descriptor + 9].copy_from_slice(&height.to_le_bytes());
    gif
}

/// The offset of the first image descriptor (0x2C) after the header and colour table.
fn image_descriptor(gif: &[u8]) -> Option<usize> {
    let table = if gif[10] & 0x80 != 0 { 3 << ((gif[10] & 7) + 1) } else { 0 };
    let mut at = 13 + table;
    while at < gif.len() {
        match gif[at] {
            0x2C => return Some(at),
            0x21 => {
                at += 2;
                while gif[at] != 0 {
                    at += gif[at] as usize + 1;
                }
                at += 1;
            }
            _ => return None,
        }
    }
    None
}

/// A three-frame animated GIF cut off in the middle of its second frame.
fn gif_truncated_second_frame() -> Vec<u8> {
    let whole = gif_frames(64, 64, 3);
    let first = gif_frames(64, 64, 1);
    whole[..first.len() - 1 + (whole.len() - first.len()) / 4].to_vec()
}

pub fn png_grey(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().expect("png header");
        writer.write_image_data(&gradient(width as usize * height as usize)).expect("png data");
    }
    out
}

/// A 64×64 PNG with a chunk whose zlib stream inflates to 1 GiB (about 1 MB on disk).
fn png_with_bomb_chunk(kind: [u8; 4]) -> Vec<u8> {
    let base = png_grey(64, 64);
    let mut data: Vec<u8> = match &kind {
        b"iCCP" => b"bomb\0\0".to_vec(),
        _ => b"Comment\0\0".to_vec(),
    };
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut zlib, &zeros).expect("in memory");
    }
    data.extend(zlib.finish().expect("in memory"));
    let mut chunk = Vec::new();
    chunk.extend((data.len() as u32).to_be_bytes());
    chunk.extend(kind);
    chunk.extend(&data);
    let mut crc = flate2::Crc::new();
    crc.update(&kind);
    crc.update(&data);
    chunk.extend(crc.sum().to_be_bytes());
    // After the signature (8) and IHDR (25): before the image data, where both chunks belong.
    let mut png = base[..33].to_vec();
    png.extend(chunk);
    png.extend(&base[33..]);
    png
}

fn apng() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 48, 32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_animated(3, 0).expect("apng");
        let mut writer = encoder.write_header().expect("png header");
        for f in 0..3u8 {
            let pixels: Vec<u8> = (0..48 * 32 * 3).map(|i| (i as u8).wrapping_mul(f + 1)).collect();
            writer.write_image_data(&pixels).expect("apng frame");
        }
    }
    out
}

fn tiff_grey(width: u32, height: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut encoder = tiff::encoder::TiffEncoder::new(&mut out)
        .expect("tiff header")
        .with_compression(tiff::encoder::Compression::Deflate(Default::default()));
    let image = encoder.new_image::<tiff::encoder::colortype::Gray8>(width, height).expect("tiff image");
    image.write_data(&gradient(width as usize * height as usize)).expect("tiff data");
    out.into_inner()
}

fn tiff_two_pages() -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut encoder = tiff::encoder::TiffEncoder::new(&mut out).expect("tiff header");
    for (w, h) in [(40u32, 30u32), (300, 200)] {
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        encoder.write_image::<tiff::encoder::colortype::RGB8>(w, h, &pixels).expect("tiff page");
    }
    out.into_inner()
}

/// An 8-bit grey (palette) BMP, rows padded to 4 bytes as the format requires.
fn bmp_grey(width: u32, height: u32) -> Vec<u8> {
    let row = (width as usize).div_ceil(4) * 4;
    let pixels_at = 14 + 40 + 256 * 4;
    let size = pixels_at + row * height as usize;
    let mut bmp = Vec::with_capacity(size);
    bmp.extend(b"BM");
    bmp.extend((size as u32).to_le_bytes());
    bmp.extend([0u8; 4]);
    bmp.extend((pixels_at as u32).to_le_bytes());
    bmp.extend(40u32.to_le_bytes());
    bmp.extend((width as i32).to_le_bytes());
    bmp.extend((height as i32).to_le_bytes());
    bmp.extend(1u16.to_le_bytes());
    bmp.extend(8u16.to_le_bytes());
    bmp.extend([0u8; 4]); // BI_RGB
    bmp.extend(((row * height as usize) as u32).to_le_bytes());
    bmp.extend([0u8; 8]);
    bmp.extend(256u32.to_le_bytes());
    bmp.extend([0u8; 4]);
    for v in 0..=255u8 {
        bmp.extend([v, v, v, 0]);
    }
    let values = gradient(width as usize * height as usize);
    for line in values.chunks(width as usize) {
        bmp.extend(line);
        bmp.extend(std::iter::repeat_n(0, row - line.len()));
    }
    bmp
}

/// A progressive JPEG of one colour (`pixel` has one byte per channel of `colour`).
pub fn jpeg_progressive(width: usize, height: usize, colour: mozjpeg::ColorSpace, pixel: &[u8]) -> Vec<u8> {
    let mut compress = mozjpeg::Compress::new(colour);
    compress.set_size(width, height);
    compress.set_fastest_defaults();
    compress.set_progressive_mode();
    let mut started = compress.start_compress(Vec::new()).expect("jpeg start");
    let rows = 64.min(height);
    let chunk: Vec<u8> = pixel.iter().copied().cycle().take(width * rows * pixel.len()).collect();
    let mut left = height;
    while left > 0 {
        let n = rows.min(left);
        started.write_scanlines(&chunk[..width * n * pixel.len()]).expect("jpeg rows");
        left -= n;
    }
    started.finish().expect("jpeg finish")
}

/// A progressive JPEG whose last scan is repeated `scans` times: libjpeg accepts every copy and
/// redoes the whole image for each.
fn jpeg_many_scans(scans: usize) -> Vec<u8> {
    let jpeg = jpeg_progressive(2048, 2048, mozjpeg::ColorSpace::JCS_RGB, &[200, 120, 40]);
    let eoi = jpeg.len() - 2;
    assert_eq!(&jpeg[eoi..], b"\xFF\xD9", "a JPEG ends with EOI");
    let last_scan = jpeg.windows(2).rposition(|w| w == b"\xFF\xDA").expect("a scan");
    let mut out = jpeg[..eoi].to_vec();
    for _ in 0..scans {
        out.extend(&jpeg[last_scan..eoi]);
    }
    out.extend(b"\xFF\xD9");
    out
}

/// The 10,000 × 10,000 CMYK progressive JPEG, made once per test process (about 10 s).
pub fn cmyk_progressive_100mp() -> &'static [u8] {
    static JPEG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    JPEG.get_or_init(|| jpeg_cmyk_progressive(10_000, 10_000))
}

/// A CMYK progressive JPEG: libjpeg keeps 8 bytes of coefficients per pixel for it, the most of any JPEG.
pub fn jpeg_cmyk_progressive(width: usize, height: usize) -> Vec<u8> {
    jpeg_progressive(width, height, mozjpeg::ColorSpace::JCS_CMYK, &[30, 140, 200, 10])
}

/// An RGBA 16-bit PNG: `image` decodes it to 8 bytes a pixel, its most.
pub fn png_rgba16(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().expect("png header");
        let mut stream = writer.stream_writer().expect("png stream");
        let row: Vec<u8> = (0..width as usize * 8).map(|i| (i % 256) as u8).collect();
        for _ in 0..height {
            std::io::Write::write_all(&mut stream, &row).expect("png row");
        }
        stream.finish().expect("png finish");
    }
    out
}

/// A two-frame animated WebP (VP8X + ANIM + ANMF around lossless frames), assembled from the
/// frames `image-webp` encodes, since no encoder here writes animations.
fn animated_webp() -> Vec<u8> {
    let (w, h) = (40u32, 24u32);
    let frame = |shade: u8| -> Vec<u8> {
        let pixels: Vec<u8> = (0..w * h).flat_map(|i| [shade, (i % 256) as u8, 255 - shade]).collect();
        let mut out = Vec::new();
        image_webp::WebPEncoder::new(&mut out).encode(&pixels, w, h, image_webp::ColorType::Rgb8).expect("webp frame");
        // RIFF(12) then the VP8L chunk: keep the chunk.
        out[12..].to_vec()
    };
    let chunk = |fourcc: &[u8; 4], payload: &[u8]| -> Vec<u8> {
        let mut c = fourcc.to_vec();
        c.extend((payload.len() as u32).to_le_bytes());
        c.extend(payload);
        if payload.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let u24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let mut vp8x = vec![0x02, 0, 0, 0]; // the animation flag
    vp8x.extend(u24(w - 1));
    vp8x.extend(u24(h - 1));
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
    for shade in [10u8, 240] {
        let mut anmf = Vec::new();
        anmf.extend(u24(0));
        anmf.extend(u24(0));
        anmf.extend(u24(w - 1));
        anmf.extend(u24(h - 1));
        anmf.extend(u24(100));
        anmf.push(0);
        anmf.extend(frame(shade));
        body.extend(chunk(b"ANMF", &anmf));
    }
    let mut riff = b"RIFF".to_vec();
    riff.extend((body.len() as u32).to_le_bytes());
    riff.extend(body);
    riff
}
