//! Decoded RGB to the model's input tensor, number for number with the reference pipeline:
//! resize (Pillow's antialiased filters), center crop or pad, scale to [0, 1], normalise.

use image::RgbImage;

use super::bundle::{PreprocessConfig, ResizeMode};
use super::decode::ImageError;
use super::resample;

/// Applies one model's [`PreprocessConfig`].
#[derive(Debug, Clone)]
pub struct Preprocessor {
    config: PreprocessConfig,
    /// `(v / 255 - mean[c]) / std[c]` for every byte value, computed in f32 as numpy does.
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    pub fn new(config: PreprocessConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - config.mean[c]) / config.std[c];
            }
        }
        Preprocessor { config, lut }
    }

    pub fn config(&self) -> &PreprocessConfig {
        &self.config
    }

    /// Values in one image's tensor: 3 × height × width.
    pub fn tensor_len(&self) -> usize {
        3 * self.config.height as usize * self.config.width as usize
    }

    /// Resizes and crops (or pads) `rgb` to exactly the model's height × width. Only the pixels
    /// of the model's window are computed, so memory stays bounded by the source and the window
    /// whatever the aspect ratio; a size the arithmetic cannot represent is refused.
    pub fn fit(&self, rgb: &RgbImage) -> Result<RgbImage, ImageError> {
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err(ImageError::ZeroSize { width: w, height: h });
        }
        let (tw, th) = (self.config.width, self.config.height);
        Ok(match self.config.resize_mode {
            ResizeMode::Squash => self.resize(rgb, tw, th),
            ResizeMode::Shortest => {
                let (nw, nh) =
                    cover_size(w, h, tw, th).ok_or(ImageError::ExtremeAspectRatio { width: w, height: h })?;
                let center = resample::Window { left: (nw - tw) / 2, top: (nh - th) / 2, width: tw, height: th };
                resample::resize_crop(rgb, (nw, nh), center, self.config.interpolation)
            }
            ResizeMode::Longest => {
                let ratio = (w as f64 / tw as f64).max(h as f64 / th as f64);
                let nw = ((w as f64 / ratio).round() as u32).clamp(1, tw);
                let nh = ((h as f64 / ratio).round() as u32).clamp(1, th);
                let resized = self.resize(rgb, nw, nh);
                let fill = image::Rgb([self.config.fill_color; 3]);
                let mut canvas = RgbImage::from_pixel(tw, th, fill);
                image::imageops::replace(&mut canvas, &resized, ((tw - nw) / 2) as i64, ((th - nh) / 2) as i64);
                canvas
            }
        })
    }

    /// Writes the normalised CHW float tensor of a fitted image into `out` (length [`Self::tensor_len`]).
    pub fn write_chw(&self, fitted: &RgbImage, out: &mut [f32]) {
        let plane = self.config.height as usize * self.config.width as usize;
        assert_eq!(fitted.len(), plane * 3, "image was not fitted to the model size");
        assert_eq!(out.len(), plane * 3, "output slice has the wrong length");
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in fitted.as_raw().chunks_exact(3).enumerate() {
            r[i] = self.lut[0][px[0] as usize];
            g[i] = self.lut[1][px[1] as usize];
            b[i] = self.lut[2][px[2] as usize];
        }
    }

    /// The normalised CHW tensor of `rgb`.
    pub fn tensor(&self, rgb: &RgbImage) -> Result<Vec<f32>, ImageError> {
        let mut out = vec![0f32; self.tensor_len()];
        self.write_chw(&self.fit(rgb)?, &mut out);
        Ok(out)
    }

    fn resize(&self, rgb: &RgbImage, width: u32, height: u32) -> RgbImage {
        resample::resize(rgb, width, height, self.config.interpolation)
    }
}

/// Size that covers `tw × th` keeping the aspect ratio. For a square target this is the
/// reference rule: short side = size, long side = int(size * long / short). `None` for a zero
/// side, or a long side past `u32::MAX` (an image over ~19 million times longer than wide).
pub fn cover_size(w: u32, h: u32, tw: u32, th: u32) -> Option<(u32, u32)> {
    if w == 0 || h == 0 {
        return None;
    }
    if tw == th {
        let size = u64::from(tw);
        let long = |long: u32, short: u32| u32::try_from((size * u64::from(long) / u64::from(short)).max(size)).ok();
        return if w <= h { Some((tw, long(h, w)?)) } else { Some((long(w, h)?, th)) };
    }
    let scale = (f64::from(tw) / f64::from(w)).max(f64::from(th) / f64::from(h));
    let side = |v: u32, min: u32| {
        let scaled = (f64::from(v) * scale).round();
        (scaled <= f64::from(u32::MAX)).then(|| (scaled as u32).max(min))
    };
    Some((side(w, tw)?, side(h, th)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedder::bundle::Interpolation;

    fn config(resize_mode: ResizeMode) -> PreprocessConfig {
        PreprocessConfig {
            height: 4,
            width: 4,
            mean: [0.5; 3],
            std: [0.25; 3],
            interpolation: Interpolation::Bicubic,
            resize_mode,
            fill_color: 0,
        }
    }

    #[test]
    fn cover_size_follows_the_reference_rule() {
        assert_eq!(cover_size(2000, 300, 224, 224), Some((1493, 224)));
        assert_eq!(cover_size(300, 2000, 224, 224), Some((224, 1493)));
        assert_eq!(cover_size(10, 10, 224, 224), Some((224, 224)));
        assert_eq!(cover_size(512, 512, 224, 224), Some((224, 224)));
        assert_eq!(cover_size(3000, 40, 256, 192), Some((14400, 192)));
    }

    #[test]
    fn cover_size_is_checked_at_the_extremes() {
        assert_eq!(cover_size(1, 10_000_000, 224, 224), Some((224, 2_240_000_000)));
        assert_eq!(cover_size(10_000_000, 1, 224, 224), Some((2_240_000_000, 224)));
        assert_eq!(cover_size(1, 19_173_962, 224, 224), None, "224 × 19,173,962 passes u32::MAX");
        assert_eq!(cover_size(u32::MAX, 1, 224, 224), None);
        assert_eq!(cover_size(1, u32::MAX, 256, 192), None);
        assert_eq!(cover_size(0, 5, 224, 224), None);
        assert_eq!(cover_size(5, 0, 256, 192), None);
        for (w, h) in [(1, 1), (1, 2), (u32::MAX, u32::MAX), (7, u32::MAX / 300), (u32::MAX / 300, 7)] {
            if let Some((nw, nh)) = cover_size(w, h, 224, 224) {
                assert!(nw >= 224 && nh >= 224, "{w}x{h} → {nw}x{nh} covers the target");
            }
        }
    }

    #[test]
    fn an_extremely_long_image_is_fitted_in_bounded_memory_or_refused() {
        let p = Preprocessor::new(PreprocessConfig { height: 8, width: 8, ..config(ResizeMode::Shortest) });
        // 1 × 4,000,000: the resized image would be 8 × 32,000,000 pixels; only the 8 × 8 window is computed.
        let tall = RgbImage::from_fn(1, 4_000_000, |_, y| image::Rgb([(y % 251) as u8, 0, 255]));
        assert_eq!(p.fit(&tall).unwrap().dimensions(), (8, 8));
        let wide = RgbImage::from_fn(4_000_000, 1, |x, _| image::Rgb([(x % 251) as u8, 0, 255]));
        assert_eq!(p.fit(&wide).unwrap().dimensions(), (8, 8));
        let empty = RgbImage::new(0, 0);
        assert!(matches!(p.fit(&empty), Err(ImageError::ZeroSize { width: 0, height: 0 })));
    }

    #[test]
    fn every_mode_gives_the_model_size() {
        let rgb = RgbImage::from_fn(10, 6, |x, y| image::Rgb([x as u8 * 20, y as u8 * 40, 7]));
        for mode in [ResizeMode::Shortest, ResizeMode::Squash, ResizeMode::Longest] {
            assert_eq!(Preprocessor::new(config(mode)).fit(&rgb).unwrap().dimensions(), (4, 4), "{mode:?}");
        }
    }

    #[test]
    fn longest_pads_with_fill_color() {
        let rgb = RgbImage::from_pixel(8, 4, image::Rgb([255, 255, 255]));
        let fitted = Preprocessor::new(config(ResizeMode::Longest)).fit(&rgb).unwrap();
        assert_eq!(fitted.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(fitted.get_pixel(0, 1).0, [255, 255, 255]);
    }

    #[test]
    fn normalisation_is_planar_and_uses_mean_and_std() {
        let p = Preprocessor::new(config(ResizeMode::Squash));
        let rgb = RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 51]));
        let t = p.tensor(&rgb).unwrap();
        assert_eq!(t.len(), 48);
        assert!((t[0] - 2.0).abs() < 1e-6); // (1 - 0.5) / 0.25
        assert!((t[16] + 2.0).abs() < 1e-6); // (0 - 0.5) / 0.25
        assert!((t[32] - (0.2 - 0.5) / 0.25).abs() < 1e-6);
    }
}
