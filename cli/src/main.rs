//! `clip-search`: the command line around the two Lambdas. It reads the same environment as
//! they do (MODEL_DIR, MILVUS_URI, AWS_*, ...; see the README) and runs the same use cases from
//! `shared`: backfill and reconcile a bucket, search, embed, and serve the page and API locally.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod batch_operations;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use shared::domain::backfill::{BackfillOptions, BackfillSummary, Progress, ReconcileReport};
use shared::domain::search::{SearchBy, SearchRequest, MAX_K};
use shared::embedder::{ImageEmbedder, TextEmbedder};
use shared::http::SearchResponse;

#[derive(Parser)]
#[command(name = "clip-search", version, about = "Index and search the images of an S3 bucket with CLIP")]
struct Cli {
    /// Read settings (KEY=VALUE lines, e.g. .local/stack.env) before the environment; variables already set win.
    #[arg(long, global = true, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Index the objects already in a bucket (S3 events only cover new uploads). Resumable: objects
    /// already indexed with the same ETag are skipped, so rerun it after Ctrl-C or a crash.
    Backfill {
        #[arg(long)]
        bucket: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        batches: BatchArgs,
        #[command(flatten)]
        job: BatchJobArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove index entries whose objects are gone and report objects missing from the index.
    Reconcile {
        #[arg(long)]
        bucket: String,
        #[arg(long, default_value = "")]
        prefix: String,
        /// Also index the missing objects.
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        batches: BatchArgs,
        #[arg(long)]
        json: bool,
    },
    /// Search by text (or by an indexed image with --similar-to) and print key, score and size.
    Search {
        /// What the picture shows.
        #[arg(required_unless_present = "similar_to", conflicts_with = "similar_to")]
        text: Option<String>,
        /// Key of an indexed image: find images like it.
        #[arg(long)]
        similar_to: Option<String>,
        #[arg(long, short, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=MAX_K as i64))]
        k: u16,
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        user: UserArg,
        /// Print the API's JSON response instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print embeddings as JSON: {"file"|"text": ..., "vector": [...]} per line.
    Embed {
        #[arg(long, num_args = 1.., required_unless_present = "text", conflicts_with = "text")]
        image: Vec<PathBuf>,
        #[arg(long, num_args = 1..)]
        text: Vec<String>,
    },
    /// Check a candidate bundle (e.g. an int8 export) against its reference on your own images and
    /// queries: the cosine between their embeddings of each input, and whether each query still
    /// finds the same images. Fails when any cosine is below --min-cosine.
    CompareModels {
        /// The bundle to trust (e.g. the fp32 export).
        reference: PathBuf,
        /// The bundle to check (e.g. its int8 export); it must embed to the same dimension.
        candidate: PathBuf,
        /// Image files, or folders whose files are all read (not recursively).
        #[arg(long, num_args = 1.., required = true)]
        images: Vec<PathBuf>,
        /// A file with one query per line (blank lines ignored).
        #[arg(long)]
        queries: PathBuf,
        /// The lowest cosine accepted for any image or query. 0.99 keeps rankings nearly unchanged
        /// in practice; see the README's int8 section.
        #[arg(long, default_value_t = 0.99)]
        min_cosine: f32,
        /// Top images compared per query for the ranking agreement.
        #[arg(long, default_value_t = 5)]
        k: usize,
        #[arg(long)]
        json: bool,
    },
    /// Serve the search page and API on this machine with your own credentials (the way to use
    /// the page when the deployed API requires IAM authorization).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        user: UserArg,
    },
}

/// `--batch-operations`: run the backfill as an S3 Batch Operations job on AWS (for large buckets)
/// instead of on this machine. The ARNs and the bucket are the SAM stack's outputs.
#[derive(Args)]
struct BatchJobArgs {
    /// Write a manifest and create an S3 Batch Operations job that invokes the ingest function per object.
    #[arg(long, requires_all = ["manifest_bucket", "role_arn", "function_arn"])]
    batch_operations: bool,
    /// Where the manifest and the completion report go (the stack's BatchOperationsBucket).
    #[arg(long)]
    manifest_bucket: Option<String>,
    /// The role the job runs as (the stack's BatchOperationsRoleArn); its account is the job's.
    #[arg(long)]
    role_arn: Option<String>,
    /// The ingest function (the stack's IngestFunctionArn).
    #[arg(long)]
    function_arn: Option<String>,
    /// Use this S3 Inventory report (s3://BUCKET/.../manifest.json) as the manifest instead of listing the bucket.
    #[arg(long, value_name = "S3_URI")]
    inventory_manifest: Option<String>,
    /// Report every task, not only the failed ones.
    #[arg(long)]
    report_all: bool,
    /// Write the manifest and print the job request without creating the job.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct UserArg {
    /// Search as this owner, as the API does for a caller whose verified claim names them (needs
    /// OWNER_KEY_TEMPLATE; with it, required): only their images are found.
    #[arg(long, value_name = "OWNER")]
    as_user: Option<String>,
}

impl UserArg {
    /// The owner to search as, checked against the configured template.
    fn owner(&self, searcher: &shared::domain::search::Searcher) -> Result<Option<String>, Error> {
        match (&searcher.access.owners, &self.as_user) {
            (None, None) => Ok(None),
            (None, Some(_)) => {
                Err("--as-user needs OWNER_KEY_TEMPLATE (e.g. users/{sub}/), which says which keys are whose".into())
            }
            (Some(template), None) => Err(format!(
                "OWNER_KEY_TEMPLATE={} shows each user only their own images: pass --as-user OWNER",
                template.as_str()
            )
            .into()),
            (Some(template), Some(owner)) => {
                template.key_prefix(owner)?;
                Ok(Some(owner.clone()))
            }
        }
    }
}

#[derive(Args)]
struct BatchArgs {
    /// Objects embedded together.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Batches in flight (fetching and decoding overlap inference).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
}

impl BatchArgs {
    fn options(&self) -> BackfillOptions {
        BackfillOptions { batch_size: self.batch_size.max(1), concurrency: self.concurrency.max(1) }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.env_file {
        // Before the runtime starts any thread: setting variables is only safe single-threaded.
        if let Err(e) = load_env_file(path) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    shared::wiring::init_cli_tracing(&std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", shared::domain::describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Backfill { bucket, prefix, job, .. } if job.batch_operations => {
            let env = shared::config::Env::process();
            let s3 = shared::store::S3Store::from_env(&env.s3()?).await;
            let settings = batch_operations::JobSettings {
                bucket,
                prefix,
                manifest_bucket: job.manifest_bucket.unwrap_or_default(),
                role_arn: job.role_arn.unwrap_or_default(),
                function_arn: job.function_arn.unwrap_or_default(),
                inventory_manifest: job.inventory_manifest,
                report_all: job.report_all,
                dry_run: job.dry_run,
            };
            let summary = batch_operations::backfill_job(&s3, &env.access()?, &settings).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if let Some(follow) = summary["follow"].as_str() {
                eprintln!("job created; follow it with: {follow}");
                eprintln!(
                    "failed tasks, with their reasons, land under {}",
                    summary["report"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill { bucket, prefix, batches, json, .. } => {
            let ingestor = shared::wiring::ingestor_from_env().await?;
            let stop = interrupt_flag();
            let progress = progress_reporter("backfill");
            let summary = shared::domain::backfill::backfill(
                &ingestor,
                &bucket,
                &prefix,
                &batches.options(),
                progress.as_ref(),
                stop,
            )
            .await?;
            print_backfill(&summary, json)?;
            Ok(exit_code(&summary))
        }
        Command::Reconcile { bucket, prefix, fix, batches, json } => {
            let ingestor = shared::wiring::ingestor_from_env().await?;
            let stop = interrupt_flag();
            let progress = progress_reporter("reconcile --fix");
            let report = shared::domain::backfill::reconcile(
                &ingestor,
                &bucket,
                &prefix,
                fix,
                &batches.options(),
                progress.as_ref(),
                stop,
            )
            .await?;
            print_reconcile(&report, json)?;
            let fixed_ok = report.fixed.as_ref().is_none_or(|s| s.failed.is_empty() && !s.interrupted);
            Ok(if fixed_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Search { text, similar_to, k, prefix, user, json } => {
            let searcher = shared::wiring::searcher_from_env().await?;
            let owner = user.owner(&searcher)?;
            let by = match (text, similar_to) {
                (_, Some(key)) => SearchBy::SimilarTo(key),
                (Some(text), None) => SearchBy::Text(text),
                (None, None) => unreachable!("clap requires one"),
            };
            let mut request = SearchRequest::text("", k as usize);
            request.by = by;
            request.filter.prefix = prefix.filter(|p| !p.is_empty());
            request.filter.owner = owner;
            // The next page's cursor, signed as the API signs it (the same CURSOR_SIGNING_KEY makes it valid there).
            let cursors = shared::wiring::cursor_key_from_env().await?;
            let response = SearchResponse::new(&request, searcher.search(&request).await?, &cursors);
            if json {
                println!("{}", serde_json::to_string_pretty(&response)?);
            } else {
                print_table(&response);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed { image, text } => {
            if image.is_empty() {
                let (encoder, _) = shared::wiring::text_encoder_from_env().await?;
                let refs: Vec<&str> = text.iter().map(String::as_str).collect();
                for (text, vector) in text.iter().zip(encoder.embed_texts(&refs)?) {
                    println!("{}", serde_json::json!({"text": text, "vector": vector}));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let encoder = shared::wiring::image_encoder_from_env().await?;
            let mut failed = false;
            let bytes: Vec<Vec<u8>> = image
                .iter()
                .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            for (path, result) in image.iter().zip(encoder.embed_images(&refs)?) {
                match result {
                    Ok(embedding) => println!(
                        "{}",
                        serde_json::json!({"file": path, "width": embedding.width, "height": embedding.height, "vector": embedding.vector})
                    ),
                    Err(e) => {
                        failed = true;
                        eprintln!("{}: {e}", path.display());
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::CompareModels { reference, candidate, images, queries, min_cosine, k, json } => {
            let images = read_images(&images)?;
            let queries: Vec<String> = std::fs::read_to_string(&queries)
                .map_err(|e| format!("{}: {e}", queries.display()))?
                .lines()
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_string)
                .collect();
            if queries.is_empty() {
                return Err("--queries holds no query: give one per line".into());
            }
            let (reference_image, reference_text) = shared::wiring::encoders_from_dir(&reference).await?;
            let (candidate_image, candidate_text) = shared::wiring::encoders_from_dir(&candidate).await?;
            use shared::embedder::compare::{compare, Towers};
            let comparison = tokio::task::block_in_place(|| {
                compare(
                    Towers { reference: &reference_image as &dyn ImageEmbedder, candidate: &candidate_image },
                    Towers { reference: &reference_text as &dyn TextEmbedder, candidate: &candidate_text },
                    &images,
                    &queries,
                    k.max(1),
                )
            })?;
            let failures = comparison.failures(min_cosine);
            if json {
                let report = serde_json::json!({"comparison": comparison, "min_cosine": min_cosine, "passed": failures.is_empty()});
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_comparison(&comparison);
            }
            for skipped in &comparison.skipped {
                eprintln!("skipped {}: {}", skipped.name, skipped.reason);
            }
            if comparison.images.count == 0 {
                return Err("no image could be embedded by both models".into());
            }
            for failure in &failures {
                eprintln!("below --min-cosine: {failure}");
            }
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Serve { listen, user } => {
            let searcher = Arc::new(shared::wiring::searcher_from_env().await?);
            let owner = user.owner(&searcher)?;
            let cursors = shared::wiring::cursor_key_from_env().await?;
            let listener =
                tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("listen on {listen}: {e}"))?;
            eprintln!("serving the search page on http://{}/ (Ctrl-C stops)", listener.local_addr()?);
            // The router the search Lambda runs, with the same routing by the last path segment.
            // With --as-user, every request is that owner's, as if API Gateway had verified their token.
            let service = shared::http::service::<axum::body::Body>(searcher, cursors);
            let app = axum::ServiceExt::into_make_service(tower::util::MapRequest::new(
                service,
                move |mut request: axum::http::Request<axum::body::Body>| {
                    if let Some(owner) = &owner {
                        request.extensions_mut().insert(shared::http::VerifiedOwner(owner.clone()));
                    }
                    request
                },
            ));
            axum::serve(listener, app).with_graceful_shutdown(ctrl_c()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Set on the first Ctrl-C: batches in flight finish, no new one starts. A second Ctrl-C exits at once.
fn interrupt_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    tokio::spawn(async {
        ctrl_c().await;
        eprintln!("\ninterrupted: finishing the batches in flight; Ctrl-C again to quit now (rerun to resume)");
        STOP.store(true, Ordering::SeqCst);
        ctrl_c().await;
        std::process::exit(130);
    });
    &STOP
}

/// A progress bar with rate and ETA on a terminal; a log line every few seconds otherwise.
fn progress_reporter(what: &'static str) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::no_length();
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} objects, {per_sec}, ETA {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(what);
        Box::new(Bar(bar))
    } else {
        Box::new(LogLines {
            what,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            started: Instant::now(),
            last: Mutex::new(None),
        })
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.reset_eta();
    }
    fn advance(&self, done: u64) {
        self.0.inc(done);
    }
    fn finish(&self) {
        self.0.finish();
    }
}

struct LogLines {
    what: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Option<Instant>>,
}

impl LogLines {
    fn line(&self) {
        let (done, total) = (self.done.load(Ordering::SeqCst), self.total.load(Ordering::SeqCst));
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / seconds;
        let eta = if rate > 0.0 { format!("{:.0}s", total.saturating_sub(done) as f64 / rate) } else { "?".into() };
        eprintln!("{}: {done}/{total} objects, {rate:.1}/s, ETA {eta}", self.what);
    }
}

impl Progress for LogLines {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::SeqCst);
        eprintln!("{}: {total} objects listed", self.what);
    }
    fn advance(&self, done: u64) {
        self.done.fetch_add(done, Ordering::SeqCst);
        let mut last = self.last.lock().expect("not poisoned");
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            *last = Some(Instant::now());
            self.line();
        }
    }
    fn finish(&self) {
        self.line();
    }
}

fn exit_code(summary: &BackfillSummary) -> ExitCode {
    if summary.interrupted {
        ExitCode::from(130)
    } else if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_backfill(summary: &BackfillSummary, json: bool) -> Result<(), Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    println!(
        "{} objects: {} indexed, {} unchanged (already indexed), {} failed",
        summary.listed,
        summary.indexed.len(),
        summary.unchanged,
        summary.failed.len()
    );
    for failure in &summary.failed {
        println!("  failed {}: {}", failure.key, failure.reason);
    }
    if summary.interrupted {
        println!("interrupted: rerun the same command to index the rest");
    }
    Ok(())
}

fn print_reconcile(report: &ReconcileReport, json: bool) -> Result<(), Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "{} objects, {} index entries: {} removed (object gone), {} missing from the index",
        report.objects,
        report.indexed_before,
        report.removed.len(),
        report.missing.len()
    );
    for key in &report.removed {
        println!("  removed {key}");
    }
    for key in &report.missing {
        println!("  missing {key}");
    }
    match &report.fixed {
        Some(summary) => print_backfill(summary, false)?,
        None if !report.missing.is_empty() => println!("run with --fix to index the missing objects"),
        None => {}
    }
    Ok(())
}

fn print_table(response: &SearchResponse) {
    if response.results.is_empty() {
        println!("no images found");
        return;
    }
    let width = response.results.iter().map(|r| r.key.chars().count()).max().unwrap_or(3).clamp(3, 80);
    println!("{:<width$}  {:>6}  {:>10}", "key", "score", "size");
    for result in &response.results {
        println!("{:<width$}  {:>6.3}  {:>10}", result.key, result.score, result.size);
    }
}

/// `KEY=VALUE` lines; `#` comments and blank lines are ignored; variables already set win.
fn load_env_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--env-file {}: {e}", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("--env-file {} line {}: expected KEY=VALUE", path.display(), n + 1))?;
        let key = key.trim().trim_start_matches("export ").trim();
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, value.trim().trim_matches('"'));
        }
    }
    Ok(())
}

/// The files named, and the files directly inside the folders named, sorted by path.
fn read_images(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut inside: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    files
        .into_iter()
        .map(|p| Ok((p.display().to_string(), std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)))
        .collect()
}

fn print_comparison(c: &shared::embedder::compare::Comparison) {
    for (what, a) in [("images", &c.images), ("queries", &c.texts)] {
        println!(
            "{what:8} {:>5}  cosine min {:.5}  mean {:.5}  worst {}",
            a.count,
            a.min,
            a.mean,
            a.worst.as_deref().unwrap_or("-")
        );
    }
    if let Some(r) = &c.ranking {
        println!(
            "ranking  same first image for {:.1} % of queries; top-{} overlap {:.1} % (candidate text tower over the reference's image vectors)",
            r.top1 * 100.0,
            r.k,
            r.overlap_at_k * 100.0
        );
    }
}
