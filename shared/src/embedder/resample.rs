//! Pillow 13's antialiased convolution resize (`Image.resize` with BICUBIC or BILINEAR),
//! reproduced operation for operation: the same filter support scaled by the reduction
//! factor, coefficients normalised in f64 then fixed point with 22 fraction bits, a
//! pass order chosen by Pillow's rule, 8-bit rounding between the two passes.
//! Matching it bit for bit is what keeps our tensors equal to the Python reference's.

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

/// For each output position: first input index, and fixed-point weights of the inputs from there.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn coefficients(in_size: usize, out_size: usize, filter: &Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow truncates toward zero with a C cast.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut total = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(xmax) {
            *w = (filter.weight)((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *w;
        }
        for (x, w) in k.iter().enumerate().take(xmax) {
            let w = if total != 0.0 { w / total } else { *w };
            let fixed = w * (1i64 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients { ksize, bounds, weights }
}

/// Accumulators are i32, as in Pillow: the weights sum to 2^22, so a sum stays far from overflow,
/// and i32 lanes vectorise twice as wide as i64.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image to `width × height` exactly as Pillow (13) does.
pub fn resize(src: &RgbImage, width: u32, height: u32, interpolation: Interpolation) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return src.clone();
    }
    let filter = filter(interpolation);
    let need_horizontal = in_w != out_w;
    let need_vertical = in_h != out_h;
    // Pillow 13 runs the vertical pass first when the height shrinks by more than
    // twice as many pixels as the width; the 8-bit rounding between passes makes the order visible.
    let horizontal_first = !(in_h > out_h && (in_h - out_h) as i64 > (in_w as i64 - out_w as i64) * 2);
    let src = src.as_raw();
    let pixels = if horizontal_first {
        let vertical = coefficients(in_h, out_h, &filter);
        // Only the rows the vertical pass will read are resampled horizontally.
        let (first_row, last_row) = if need_vertical {
            let (last_min, last_len) = vertical.bounds[out_h - 1];
            (vertical.bounds[0].0, last_min + last_len)
        } else {
            (0, in_h)
        };
        let rows = &src[first_row * in_w * 3..last_row * in_w * 3];
        let temp = if need_horizontal {
            horizontal_pass(rows, in_w, &coefficients(in_w, out_w, &filter))
        } else {
            rows.to_vec()
        };
        if need_vertical {
            vertical_pass(&temp, out_w, first_row, &vertical)
        } else {
            temp
        }
    } else {
        let temp = vertical_pass(src, in_w, 0, &coefficients(in_h, out_h, &filter));
        if need_horizontal {
            horizontal_pass(&temp, in_w, &coefficients(in_w, out_w, &filter))
        } else {
            temp
        }
    };
    RgbImage::from_raw(width, height, pixels).expect("resampled buffer matches its size")
}

/// Resamples every row of `src` (rows of `in_w` RGB pixels) to `c.bounds.len()` pixels.
fn horizontal_pass(src: &[u8], in_w: usize, c: &Coefficients) -> Vec<u8> {
    let out_w = c.bounds.len();
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; src.len() / (in_w * 3) * out_w * 3];
    for (in_row, out_row) in src.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for (xx, px_out) in out_row.chunks_exact_mut(3).enumerate() {
            let (xmin, xlen) = c.bounds[xx];
            let k = &c.weights[xx * c.ksize..xx * c.ksize + xlen];
            let (mut r, mut g, mut b) = (half, half, half);
            for (px, &w) in in_row[xmin * 3..(xmin + xlen) * 3].chunks_exact(3).zip(k) {
                r += px[0] as i32 * w;
                g += px[1] as i32 * w;
                b += px[2] as i32 * w;
            }
            px_out.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Resamples the columns of `src` (rows of `width` RGB pixels, starting at source row
/// `first_row`) to `c.bounds.len()` rows.
fn vertical_pass(src: &[u8], width: usize, first_row: usize, c: &Coefficients) -> Vec<u8> {
    let stride = width * 3;
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; c.bounds.len() * stride];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, ylen) = c.bounds[yy];
        let k = &c.weights[yy * c.ksize..yy * c.ksize + ylen];
        acc.fill(half);
        for (dy, &w) in k.iter().enumerate() {
            let y = ymin - first_row + dy;
            for (a, &v) in acc.iter_mut().zip(&src[y * stride..(y + 1) * stride]) {
                *a += v as i32 * w;
            }
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
            let c = coefficients(i, o, &filter(Interpolation::Bicubic));
            for xx in 0..o {
                let sum: i64 = c.weights[xx * c.ksize..(xx + 1) * c.ksize].iter().map(|&w| w as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= c.ksize as i64, "{i}->{o} at {xx}: {sum}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let src = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        for (w, h) in [(224, 224), (5, 3), (37, 100)] {
            let out = resize(&src, w, h, Interpolation::Bicubic);
            assert!(out.pixels().all(|p| p.0 == [10, 128, 250]), "{w}x{h}");
        }
    }
}
