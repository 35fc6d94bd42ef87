//! Decodes and fits one image the way ingest does (decode limits, resize to the model's size),
//! then prints the outcome, the process's peak RSS and its peak address space as JSON. The memory-bound test runs it
//! under an address-space limit (`prlimit --as`): an allocation past the limit aborts it.
//!
//! `decode-within FILE MAX_PIXELS`

use std::time::Duration;

use shared::embedder::decode::DecodeLimits;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, max_pixels] = args.as_slice() else {
        eprintln!("usage: decode-within FILE MAX_PIXELS");
        std::process::exit(2);
    };
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let limits =
        DecodeLimits { max_pixels: max_pixels.parse().expect("MAX_PIXELS"), deadline: Duration::from_secs(120) };
    let outcome = tests::hostile::prepare(&bytes, &limits);
    // SAFETY: getrusage only writes the struct it is given.
    let peak_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage.ru_maxrss
    };
    let result = match outcome {
        Ok((w, h)) => serde_json::json!({"embedded": [w, h]}),
        Err(reason) => serde_json::json!({"skipped": reason}),
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let vm_peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({"result": result, "peak_rss_bytes": peak_kib * 1024, "vm_peak_bytes": vm_peak_kib * 1024})
    );
}
