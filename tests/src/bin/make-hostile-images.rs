//! Writes the hostile images of `tests::hostile` to a directory, to upload to the local stack
//! or to seed the fuzzer: `cargo run -p tests --bin make-hostile-images -- DIR [--big]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: make-hostile-images DIR [--big]   (--big adds the 100 MP CMYK progressive JPEG)");
        std::process::exit(2);
    };
    let big = args.any(|a| a == "--big");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    for file in tests::hostile::all(big) {
        let path = std::path::Path::new(&dir).join(file.name);
        std::fs::write(&path, &file.bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("{}\t{} bytes\texpect {:?}", path.display(), file.bytes.len(), file.expect);
    }
}
