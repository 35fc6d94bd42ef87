//! Pillow 13's antialiased convolution resize (`Image.resize` with BICUBIC or BILINEAR),
//! reproduced operation for operation: the same filter support scaled by the reduction
//! factor, coefficients normalised in f64 then fixed point with 22 fraction bits, a
//! pass order chosen by Pillow's rule, 8-bit rounding between the two passes.
//! Matching it bit for bit is what keeps our tensors equal to the Python reference's.

use std::ops::Range;

use image::RgbImage;

use super::bundle::Interpolation;

const PRECISION_BITS: u32 = 32 - 8 - 2;

struct Filter {
    support: f64,
    weight: fn(f64) -> f64,
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn filter(interpolation: Interpolation) -> Filter {
    match interpolation {
        Interpolation::Bicubic => Filter { support: 2.0, weight: bicubic },
        Interpolation::Bilinear => Filter { support: 1.0, weight: bilinear },
    }
}

/// The weights of a resize from `in_size` to `out_size`, computed for one output position at a
/// time, when a pass needs it. Pillow computes a table for every output position; here only the
/// positions a crop window needs are ever computed, and only one is held, so memory is one
/// kernel (at most `in_size` taps) whatever the sizes: a 1 × 10,000,000 strip stretched to 2.24
/// billion rows, or squashed to 224 columns (a kernel of 180,000 taps per column), costs one kernel.
struct Coefficients {
    in_size: usize,
    scale: f64,
    filterscale: f64,
    support: f64,
    weight: fn(f64) -> f64,
    weights: Vec<i32>,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize, filter: &Filter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support * filterscale;
        // Pillow's kernel size, but never more taps than there are inputs.
        let ksize = (support.ceil() as usize).saturating_mul(2).saturating_add(1).min(in_size.saturating_add(1));
        Coefficients { in_size, scale, filterscale, support, weight: filter.weight, weights: Vec::with_capacity(ksize) }
    }

    /// The first input index and the fixed-point weights of output position `xx`.
    fn of(&mut self, xx: usize) -> (usize, &[i32]) {
        let center = (xx as f64 + 0.5) * self.scale;
        let ss = 1.0 / self.filterscale;
        // Pillow truncates toward zero with a C cast.
        let xmin = ((center - self.support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + self.support + 0.5) as i64).min(self.in_size as i64) as usize - xmin;
        // Two passes over the filter (the sum, then each weight again) instead of a table of f64:
        // the same values in the same order, so the same bits, in a third of the memory.
        let tap = |x: usize| (self.weight)((x as f64 + xmin as f64 - center + 0.5) * ss);
        let total: f64 = (0..xmax).map(tap).sum();
        self.weights.clear();
        self.weights.extend((0..xmax).map(|x| {
            let w = tap(x);
            let w = if total != 0.0 { w / total } else { w };
            let fixed = w * (1i64 << PRECISION_BITS) as f64;
            if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            }
        }));
        (xmin, &self.weights)
    }

    /// The input indices output positions `outputs` read from.
    fn inputs(&mut self, outputs: Range<usize>) -> Range<usize> {
        let (first, _) = self.of(outputs.start);
        let (min, weights) = self.of(outputs.end - 1);
        first..min + weights.len()
    }
}

/// Accumulators are i32, as in Pillow: the weights sum to 2^22, so a sum stays far from overflow,
/// and i32 lanes vectorise twice as wide as i64.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image to `width × height` exactly as Pillow (13) does.
pub fn resize(src: &RgbImage, width: u32, height: u32, interpolation: Interpolation) -> RgbImage {
    resize_crop(src, (width, height), Window { left: 0, top: 0, width, height }, interpolation)
}

/// A rectangle of the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// `window` of the image Pillow's `resize(size)` would give, computing only the pixels inside it:
/// every output pixel depends on its own row and column weights alone, so cropping after a full
/// resize gives the same bytes. Center-cropping a 4:3 photo this way skips a quarter of the work.
pub fn resize_crop(src: &RgbImage, size: (u32, u32), window: Window, interpolation: Interpolation) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (size.0 as usize, size.1 as usize);
    let (left, top) = (window.left as usize, window.top as usize);
    let (win_w, win_h) = (window.width as usize, window.height as usize);
    assert!(left + win_w <= out_w && top + win_h <= out_h, "window {window:?} is outside {size:?}");
    let columns = left..left + win_w;
    let rows = top..top + win_h;
    if (in_w, in_h) == (out_w, out_h) {
        return image::imageops::crop_imm(src, window.left, window.top, window.width, window.height).to_image();
    }
    let filter = filter(interpolation);
    let need_horizontal = in_w != out_w;
    let need_vertical = in_h != out_h;
    // Pillow 13 runs the vertical pass first when the height shrinks by more than
    // twice as many pixels as the width; the 8-bit rounding between passes makes the order visible.
    let horizontal_first = !(in_h > out_h && (in_h - out_h) as i64 > (in_w as i64 - out_w as i64) * 2);
    let src = src.as_raw();
    let pixels = if horizontal_first {
        // Only the source rows the vertical pass will read are resampled horizontally.
        let (vertical, first_row, last_row) = if need_vertical {
            let mut c = Coefficients::new(in_h, out_h, &filter);
            let needed = c.inputs(rows.clone());
            (Some(c), needed.start, needed.end)
        } else {
            (None, rows.start, rows.end)
        };
        let band = &src[first_row * in_w * 3..last_row * in_w * 3];
        let temp = if need_horizontal {
            horizontal_pass(band, in_w, &mut Coefficients::new(in_w, out_w, &filter), columns)
        } else {
            crop_columns(band, in_w, columns)
        };
        match vertical {
            Some(mut c) => vertical_pass(&temp, win_w, first_row, &mut c, rows),
            None => temp,
        }
    } else {
        let temp = vertical_pass(src, in_w, 0, &mut Coefficients::new(in_h, out_h, &filter), rows);
        if need_horizontal {
            horizontal_pass(&temp, in_w, &mut Coefficients::new(in_w, out_w, &filter), columns)
        } else {
            crop_columns(&temp, in_w, columns)
        }
    };
    RgbImage::from_raw(window.width, window.height, pixels).expect("resampled buffer matches its size")
}

fn crop_columns(src: &[u8], width: usize, columns: Range<usize>) -> Vec<u8> {
    src.chunks_exact(width * 3).flat_map(|row| &row[columns.start * 3..columns.end * 3]).copied().collect()
}

/// Resamples every row of `src` (rows of `in_w` RGB pixels) to the output pixels `columns`.
/// Done as a vertical pass over the transposed image: the inner loop then runs over contiguous
/// bytes and vectorises, where the direct loop over 3-byte pixels does not. Same integer sums.
fn horizontal_pass(src: &[u8], in_w: usize, c: &mut Coefficients, columns: Range<usize>) -> Vec<u8> {
    let rows = src.len() / (in_w * 3);
    let width = columns.len();
    let transposed = transpose_rgb(src, in_w, rows);
    let out = vertical_pass(&transposed, rows, 0, c, columns);
    transpose_rgb(&out, rows, width)
}

/// `src` is `height` rows of `width` RGB pixels; returns `width` rows of `height` pixels.
/// Tiled so that both the rows read and the rows written stay in L1.
fn transpose_rgb(src: &[u8], width: usize, height: usize) -> Vec<u8> {
    const TILE: usize = 16;
    let (pixels, _) = src.as_chunks::<3>();
    let mut out = vec![0u8; src.len()];
    let (transposed, _) = out.as_chunks_mut::<3>();
    for y0 in (0..height).step_by(TILE) {
        let y1 = (y0 + TILE).min(height);
        for x0 in (0..width).step_by(TILE) {
            let x1 = (x0 + TILE).min(width);
            for x in x0..x1 {
                let column = &mut transposed[x * height + y0..x * height + y1];
                for (pixel, y) in column.iter_mut().zip(y0..y1) {
                    *pixel = pixels[y * width + x];
                }
            }
        }
    }
    out
}

/// `acc[i] += row[i] * weight`, the inner loop of both passes. Built twice: with AVX2 (8 lanes
/// of 32-bit multiply) for CPUs that have it, as every Lambda x86_64 host does, and plain for the rest;
/// x86_64's baseline SSE2 has no 32-bit lane multiply, so the plain build barely vectorises there.
fn accumulate(acc: &mut [i32], row: &[u8], weight: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { accumulate_avx2(acc, row, weight) };
    }
    accumulate_plain(acc, row, weight);
}

#[inline(always)]
fn accumulate_plain(acc: &mut [i32], row: &[u8], weight: i32) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a += v as i32 * weight;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2(acc: &mut [i32], row: &[u8], weight: i32) {
    accumulate_plain(acc, row, weight);
}

/// Resamples the columns of `src` (rows of `width` RGB pixels, starting at source row
/// `first_row`) to the output rows `rows`.
fn vertical_pass(src: &[u8], width: usize, first_row: usize, c: &mut Coefficients, rows: Range<usize>) -> Vec<u8> {
    let stride = width * 3;
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; rows.len() * stride];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in rows.zip(out.chunks_exact_mut(stride)) {
        let (ymin, k) = c.of(yy);
        acc.fill(half);
        for (dy, &w) in k.iter().enumerate() {
            let y = ymin - first_row + dy;
            accumulate(&mut acc, &src[y * stride..(y + 1) * stride], w);
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(4032, 298), (10, 224), (300, 224), (224, 223)] {
            let mut c = Coefficients::new(i, o, &filter(Interpolation::Bicubic));
            for xx in 0..o {
                let k = c.of(xx).1;
                let sum: i64 = k.iter().map(|&w| w as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{i}->{o} at {xx}: {sum}");
            }
        }
    }

    #[test]
    fn a_kernel_never_holds_more_taps_than_inputs() {
        let f = filter(Interpolation::Bicubic);
        // A 1-pixel strip stretched to 2.24 billion positions: a kernel of a few taps.
        let mut strip = Coefficients::new(10_000_000, 2_240_000_000, &f);
        assert_eq!(strip.inputs(1_119_999_888..1_120_000_112), 4_999_998..5_000_002);
        assert!(strip.weights.capacity() <= 5);
        // 256,632 columns squashed to one: one kernel of every input, not Pillow's 2 × support + 1.
        let mut squash = Coefficients::new(256_632, 1, &f);
        assert_eq!(squash.of(0).1.len(), 256_632);
        assert!(squash.weights.capacity() <= 256_633);
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let src = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        for (w, h) in [(224, 224), (5, 3), (37, 100)] {
            let out = resize(&src, w, h, Interpolation::Bicubic);
            assert!(out.pixels().all(|p| p.0 == [10, 128, 250]), "{w}x{h}");
        }
    }

    /// Pillow's loop, pixel by pixel: what the transposed horizontal pass must equal.
    fn direct_horizontal(src: &[u8], in_w: usize, c: &mut Coefficients, out_w: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for row in src.chunks_exact(in_w * 3) {
            for xx in 0..out_w {
                let (xmin, k) = c.of(xx);
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &w) in (xmin..xmin + k.len()).zip(k) {
                    for (ch, a) in acc.iter_mut().enumerate() {
                        *a += row[x * 3 + ch] as i32 * w;
                    }
                }
                out.extend(acc.map(clip8));
            }
        }
        out
    }

    fn noise(w: u32, h: u32) -> RgbImage {
        let mut state = 0x9e37_79b9u32;
        RgbImage::from_fn(w, h, |_, _| {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            };
            image::Rgb([next(), next(), next()])
        })
    }

    #[test]
    fn transposed_horizontal_pass_equals_the_direct_loop() {
        for (in_w, out_w, rows) in [(640, 335, 7), (333, 224, 40), (10, 224, 3), (1008, 298, 33)] {
            let src = noise(in_w, rows);
            let mut c = Coefficients::new(in_w as usize, out_w, &filter(Interpolation::Bicubic));
            let fast = horizontal_pass(src.as_raw(), in_w as usize, &mut c, 0..out_w);
            assert_eq!(fast, direct_horizontal(src.as_raw(), in_w as usize, &mut c, out_w), "{in_w}->{out_w}");
        }
    }

    #[test]
    fn a_window_equals_cropping_the_full_resize() {
        // Both pass orders, upscaling, and one axis unchanged.
        for ((w, h), (ow, oh)) in
            [((640, 427), (335, 224)), ((300, 900), (224, 672)), ((100, 60), (373, 224)), ((224, 500), (224, 300))]
        {
            let src = noise(w, h);
            let full = resize(&src, ow, oh, Interpolation::Bicubic);
            for window in [
                Window { left: (ow - 224) / 2, top: (oh - 224) / 2, width: 224, height: 224 },
                Window { left: 3, top: 1, width: 17, height: 9 },
            ] {
                let expected = image::imageops::crop_imm(&full, window.left, window.top, window.width, window.height);
                let got = resize_crop(&src, (ow, oh), window, Interpolation::Bicubic);
                assert_eq!(got.as_raw(), expected.to_image().as_raw(), "{w}x{h} -> {ow}x{oh} {window:?}");
            }
        }
    }
}
