//! Embeds a folder of images and a few queries, and prints each query's ranking.
//!
//! cargo run --release -p shared --example rank -- [--model-dir DIR] [--images DIR] [--top N] [QUERY...]
//!
//! Defaults: the tiny test model and the fixture photos. The tiny model has random
//! weights, so its rankings are reproducible but not semantic; point --model-dir (or
//! MODEL_DIR) at a real model in immich's layout for meaningful results.

use std::path::PathBuf;
use std::time::Instant;

use shared::config::DEFAULT_MAX_IMAGE_PIXELS;
use shared::embedder::onnx::RuntimeOptions;
use shared::embedder::{cosine, ClipImageEncoder, ClipTextEncoder, ImageEmbedder, ModelBundle, TextEmbedder};

const DEFAULT_QUERIES: [&str; 4] = ["a photo of a cat", "a rocket launching", "a cup of coffee", "an astronaut"];

struct Args {
    model_dir: PathBuf,
    images: PathBuf,
    top: usize,
    queries: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = Args {
        model_dir: std::env::var_os("MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("tests/fixtures/tiny-clip")),
        images: repo.join("tests/fixtures/images"),
        top: 5,
        queries: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--model-dir" => args.model_dir = value("--model-dir")?.into(),
            "--images" => args.images = value("--images")?.into(),
            "--top" => args.top = value("--top")?.parse().map_err(|_| "--top needs a whole number".to_string())?,
            "-h" | "--help" => {
                return Err("usage: rank [--model-dir DIR] [--images DIR] [--top N] [QUERY...]".to_string());
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            query => args.queries.push(query.to_string()),
        }
    }
    if args.queries.is_empty() {
        args.queries = DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect();
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let bundle = ModelBundle::open(&args.model_dir)?;
    let runtime = RuntimeOptions::default();
    let started = Instant::now();
    let images = ClipImageEncoder::load(&bundle, &runtime, DEFAULT_MAX_IMAGE_PIXELS)?;
    let texts = ClipTextEncoder::load(&bundle, &runtime)?;
    println!("model {} ({}-d) loaded in {:.2?}", bundle.name(), images.dim(), started.elapsed());
    if bundle.name() == "tiny-clip" {
        println!("NOTE: tiny-clip has random weights: rankings are reproducible but NOT semantic. Set MODEL_DIR to a real model (e.g. immich-app/ViT-B-32__openai) for real search.");
    }

    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&args.images)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    let started = Instant::now();
    let mut index = Vec::new();
    for chunk in files.chunks(8) {
        let bytes: Vec<Vec<u8>> = chunk.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        for (path, result) in chunk.iter().zip(images.embed_images(&refs)?) {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            match result {
                Ok(embedding) => index.push((name, embedding.vector)),
                Err(e) => eprintln!("skipped {name}: {e}"),
            }
        }
    }
    println!("embedded {} images from {} in {:.2?}\n", index.len(), args.images.display(), started.elapsed());

    for query in &args.queries {
        let vector = match texts.embed_text(query) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("query {query:?}: {e}");
                continue;
            }
        };
        let mut ranked: Vec<(f32, &str)> = index.iter().map(|(name, v)| (cosine(&vector, v), name.as_str())).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("{query:?}");
        println!("  {:>4}  {:>7}  image", "rank", "score");
        for (rank, (score, name)) in ranked.iter().take(args.top).enumerate() {
            println!("  {:>4}  {score:>7.4}  {name}", rank + 1);
        }
        println!();
    }
    Ok(())
}
