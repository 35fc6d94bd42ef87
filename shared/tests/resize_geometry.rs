//! Property tests of the resize geometry (issue 11): for every width and height, 0, 1 and values
//! near `u32::MAX` included, the cover size is either refused or covers the model's size, and
//! fitting an image allocates memory bounded by the source and the model's window, never by
//! the resized size (which for a 1 × 1,000,000 strip is hundreds of millions of pixels).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::RgbImage;
use proptest::prelude::*;
use shared::embedder::bundle::{Interpolation, PreprocessConfig, ResizeMode};
use shared::embedder::preprocess::{cover_size, Preprocessor};

/// Counts the bytes live on the heap and their peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sides biased to the edges: 0, 1, 2, the overflow threshold for 224, and near `u32::MAX`.
fn side() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(19_173_961),
        Just(19_173_962),
        u32::MAX - 4..=u32::MAX,
        1u32..5_000,
        any::<u32>(),
    ]
}

fn mode() -> impl Strategy<Value = ResizeMode> {
    prop_oneof![Just(ResizeMode::Shortest), Just(ResizeMode::Squash), Just(ResizeMode::Longest)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn the_cover_size_covers_the_target_or_is_refused(w in side(), h in side(), tw in 1u32..1024, th in 1u32..1024) {
        match cover_size(w, h, tw, th) {
            None => {
                // Refused only for a zero side or a long side past u32::MAX.
                let (long, short) = (u64::from(w.max(h)), u64::from(w.min(h)));
                let scaled = (u64::from(tw.max(th)) * long).checked_div(short).unwrap_or(0);
                prop_assert!(short == 0 || scaled > u64::from(u32::MAX) / 2, "{w}x{h} → {tw}x{th} refused");
            }
            Some((nw, nh)) => {
                prop_assert!(nw >= tw && nh >= th, "{w}x{h} → {nw}x{nh} does not cover {tw}x{th}");
                if tw == th {
                    prop_assert_eq!(nw.min(nh), tw, "the short side is the model's size");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Any image of up to a million pixels, of any aspect ratio, fits to the model's size in each
    /// mode, and the fit allocates at most two copies of the source plus a small multiple of the window.
    #[test]
    fn fitting_allocates_within_the_source_and_the_window(
        long in 1u32..1_000_000,
        short_share in 0.0f64..1.0,
        tall in any::<bool>(),
        target in 1u32..300,
        mode in mode(),
    ) {
        let short = ((f64::from(1_000_000 / long) * short_share) as u32).clamp(1, long);
        let (w, h) = if tall { (short, long) } else { (long, short) };
        let image = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let preprocessor = Preprocessor::new(PreprocessConfig {
            height: target,
            width: target,
            mean: [0.5; 3],
            std: [0.5; 3],
            interpolation: Interpolation::Bicubic,
            resize_mode: mode,
            fill_color: 0,
        });
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let fitted = preprocessor.fit(&image);
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        match fitted {
            Ok(fitted) => prop_assert_eq!(fitted.dimensions(), (target, target)),
            Err(e) => prop_assert!(false, "{w}x{h} to {target} ({mode:?}) failed: {e}"),
        }
        let source = 3 * w as usize * h as usize;
        let window = 3 * target as usize * target as usize;
        let bound = 2 * source + 64 * window + (1 << 20);
        prop_assert!(used <= bound, "{w}x{h} to {target} ({mode:?}) used {used} bytes, over {bound}");
    }
}
