//! `clip-search backfill --batch-operations`: the backfill of a large bucket as an S3 Batch
//! Operations job that invokes the ingest function once per object, on AWS's own fan-out, with
//! a completion report of every task that failed. This writes the manifest (a CSV of the served
//! keys, or an S3 Inventory report as it is), creates the job and says how to follow it.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3control::types::{
    JobManifest, JobManifestFieldName, JobManifestFormat, JobManifestLocation, JobManifestSpec, JobOperation,
    JobReport, JobReportFormat, JobReportScope, LambdaInvokeOperation,
};
use serde_json::{json, Value};
use shared::domain::scope::Access;
use shared::store::S3Store;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the job needs: the stack's outputs (`BatchOperationsRoleArn`, `BatchOperationsBucket`,
/// `IngestFunctionArn`) and how much of it to report.
pub struct JobSettings {
    pub bucket: String,
    pub prefix: String,
    pub manifest_bucket: String,
    pub role_arn: String,
    pub function_arn: String,
    /// An S3 Inventory report's `manifest.json` (`s3://bucket/key`) to use instead of a listing.
    pub inventory_manifest: Option<String>,
    pub report_all: bool,
    /// Write the manifest, print the job request, create nothing.
    pub dry_run: bool,
}

/// Characters kept as they are in manifest keys; everything else is percent-encoded (a space as
/// `%20`, `+` as `%2B`), which reads the same whether the reader decodes `+` as a space or not.
const KEEP: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// The manifest S3 Batch Operations reads (`S3BatchOperations_CSV_20180820`, fields Bucket, Key):
/// one `bucket,key` line per object, keys URL-encoded.
pub fn manifest_csv(bucket: &str, keys: &[String]) -> String {
    keys.iter().map(|key| format!("{bucket},{}\n", percent_encoding::utf8_percent_encode(key, KEEP))).collect()
}

/// The account of an IAM role ARN (`arn:aws:iam::123456789012:role/name`).
pub fn account_of(role_arn: &str) -> Option<&str> {
    let account = role_arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

fn split_s3_uri(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("s3://")?.split_once('/').filter(|(b, k)| !b.is_empty() && !k.is_empty())
}

/// Writes the manifest (or finds the inventory's), then creates the job or, with `dry_run`,
/// returns the request it would send. Returns a JSON summary for the user.
pub async fn backfill_job(s3: &S3Store, access: &Access, settings: &JobSettings) -> Result<Value, Error> {
    let account = account_of(&settings.role_arn)
        .ok_or_else(|| {
            format!("--role-arn {:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", settings.role_arn)
        })?
        .to_string();
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (manifest_bucket, manifest_key, format, objects) = match &settings.inventory_manifest {
        Some(uri) => {
            let (bucket, key) =
                split_s3_uri(uri).ok_or_else(|| format!("--inventory-manifest {uri:?} is not s3://BUCKET/KEY"))?;
            (bucket.to_string(), key.to_string(), JobManifestFormat::S3InventoryReportCsv20161130, None)
        }
        None => {
            let prefix = access.keys.narrow(&settings.prefix)?;
            let mut keys = Vec::new();
            let mut pages =
                s3.client().list_objects_v2().bucket(&settings.bucket).prefix(&prefix).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    format!("listing s3://{}/{prefix}: {}", settings.bucket, aws_sdk_s3::error::DisplayErrorContext(e))
                })?;
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    if !key.ends_with('/') && access.serves(&settings.bucket, key) {
                        keys.push(key.to_string());
                    }
                }
            }
            let key = format!("manifests/backfill-{}-{stamp}.csv", settings.bucket);
            s3.client()
                .put_object()
                .bucket(&settings.manifest_bucket)
                .key(&key)
                .content_type("text/csv")
                .body(manifest_csv(&settings.bucket, &keys).into_bytes().into())
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "writing the manifest to s3://{}/{key}: {}",
                        settings.manifest_bucket,
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    )
                })?;
            (settings.manifest_bucket.clone(), key, JobManifestFormat::S3BatchOperationsCsv20180820, Some(keys.len()))
        }
    };
    let head = s3.client().head_object().bucket(&manifest_bucket).key(&manifest_key).send().await.map_err(|e| {
        format!(
            "reading the manifest s3://{manifest_bucket}/{manifest_key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )
    })?;
    let etag = head.e_tag().unwrap_or_default().trim_matches('"').to_string();
    let manifest_arn = format!("arn:aws:s3:::{manifest_bucket}/{manifest_key}");
    let report_scope = if settings.report_all { JobReportScope::AllTasks } else { JobReportScope::FailedTasksOnly };
    let request = json!({
        "AccountId": account,
        "ConfirmationRequired": false,
        "Operation": {"LambdaInvoke": {"FunctionArn": settings.function_arn, "InvocationSchemaVersion": "2.0"}},
        "Report": {
            "Bucket": format!("arn:aws:s3:::{}", settings.manifest_bucket),
            "Format": "Report_CSV_20180820",
            "Enabled": true,
            "Prefix": "reports",
            "ReportScope": report_scope.as_str(),
        },
        "Manifest": {
            "Spec": {"Format": format.as_str(), "Fields": if objects.is_some() { json!(["Bucket", "Key"]) } else { Value::Null }},
            "Location": {"ObjectArn": manifest_arn, "ETag": etag},
        },
        "Priority": 10,
        "RoleArn": settings.role_arn,
        "Description": format!("clip-search backfill of s3://{}", settings.bucket),
    });
    let mut summary =
        json!({"manifest": format!("s3://{manifest_bucket}/{manifest_key}"), "objects": objects, "request": request});
    if settings.dry_run {
        return Ok(summary);
    }
    let config = aws_config::load_from_env().await;
    let control = aws_sdk_s3control::Client::new(&config);
    let mut spec = JobManifestSpec::builder().format(format);
    if objects.is_some() {
        spec = spec.fields(JobManifestFieldName::Bucket).fields(JobManifestFieldName::Key);
    }
    let created = control
        .create_job()
        .account_id(&account)
        .confirmation_required(false)
        .operation(
            JobOperation::builder()
                .lambda_invoke(
                    LambdaInvokeOperation::builder()
                        .function_arn(&settings.function_arn)
                        .invocation_schema_version("2.0")
                        .build(),
                )
                .build(),
        )
        .report(
            JobReport::builder()
                .bucket(format!("arn:aws:s3:::{}", settings.manifest_bucket))
                .format(JobReportFormat::ReportCsv20180820)
                .enabled(true)
                .prefix("reports")
                .report_scope(report_scope)
                .build(),
        )
        .manifest(
            JobManifest::builder()
                .spec(spec.build()?)
                .location(JobManifestLocation::builder().object_arn(&manifest_arn).e_tag(&etag).build()?)
                .build(),
        )
        .priority(10)
        .role_arn(&settings.role_arn)
        .client_request_token(format!("clip-search-{stamp}"))
        .description(format!("clip-search backfill of s3://{}", settings.bucket))
        .send()
        .await
        .map_err(|e| {
            format!("creating the S3 Batch Operations job: {}", aws_sdk_s3control::error::DisplayErrorContext(e))
        })?;
    let job = created.job_id().unwrap_or_default().to_string();
    summary["job_id"] = json!(job);
    summary["follow"] = json!(format!("aws s3control describe-job --account-id {account} --job-id {job}"));
    summary["report"] = json!(format!("s3://{}/reports/job-{job}/", settings.manifest_bucket));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_encode_keys_so_either_decoding_reads_them_back() {
        let csv = manifest_csv("photos", &["dir/a b+c,d é.jpg".into(), "plain/x.png".into()]);
        assert_eq!(csv, "photos,dir/a%20b%2Bc%2Cd%20%C3%A9.jpg\nphotos,plain/x.png\n");
        let encoded = csv.lines().next().unwrap().split_once(',').unwrap().1;
        assert_eq!(shared::events::decode_s3_key(encoded), "dir/a b+c,d é.jpg");
    }

    #[test]
    fn the_account_comes_from_the_role() {
        assert_eq!(account_of("arn:aws:iam::123456789012:role/x"), Some("123456789012"));
        assert_eq!(account_of("arn:aws:iam::12345:role/x"), None);
        assert_eq!(account_of("role/x"), None);
        assert_eq!(split_s3_uri("s3://b/inv/manifest.json"), Some(("b", "inv/manifest.json")));
        assert_eq!(split_s3_uri("s3://b/"), None);
    }
}
