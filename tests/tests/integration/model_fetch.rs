//! The model fetched from S3 at init (`MODEL_S3_URI`): ranged GETs in parallel give the same files
//! as whole-object GETs one after another, only the wanted files are written, and a warm container
//! (the files already there with their sizes) fetches nothing.

use shared::store::Transfer;
use tests::{put, Stack};

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/stack up --detach --no-demo"]
async fn ranged_parallel_fetches_write_the_same_files_as_sequential_ones() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "model-fetch").await;
    // Not a multiple of the part size, so the last range is short.
    let weights: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let files: [(&str, Vec<u8>); 4] = [
        ("config.json", b"{\"embed_dim\": 64}".to_vec()),
        ("visual/model.onnx", weights),
        ("visual/empty.bin", Vec::new()),
        ("textual/model.onnx", b"not wanted by the visual tower".to_vec()),
    ];
    for (name, body) in &files {
        put(&s3, &bucket, &format!("bundle/{name}"), body.clone(), "application/octet-stream").await;
    }
    let wanted = |rel: &str| !rel.starts_with("textual/");
    for transfer in [Transfer::SEQUENTIAL, Transfer { concurrency: 3, part_bytes: 7_000 }] {
        let dest = tempfile::tempdir().unwrap();
        let copied = s3.download_prefix(&bucket, "bundle", dest.path(), wanted, transfer).await.unwrap();
        assert_eq!(copied, 3, "{transfer:?}");
        for (name, body) in &files[..3] {
            assert_eq!(&std::fs::read(dest.path().join(name)).unwrap(), body, "{name} with {transfer:?}");
        }
        assert!(!dest.path().join("textual").exists(), "only the wanted files");
        let leftovers: Vec<_> = std::fs::read_dir(dest.path().join("visual"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A warm container: same sizes, nothing fetched again.
        assert_eq!(s3.download_prefix(&bucket, "bundle/", dest.path(), wanted, transfer).await.unwrap(), 0);
    }
    for (name, _) in &files {
        s3.client().delete_object().bucket(&bucket).key(format!("bundle/{name}")).send().await.unwrap();
    }
    s3.client().delete_bucket().bucket(&bucket).send().await.unwrap();
}
