//! The local stand-in for S3 → SQS → Lambda: S3 events go to a real SQS API (moto's server on the
//! local stack), and pollers feed ingest as Lambda's event source mapping does: up to `batch_size`
//! messages gathered for at most `window`, one invocation per batch, the messages listed in
//! `batchItemFailures` left for redelivery after the visibility timeout, the others deleted. A
//! failed invocation deletes nothing, so the whole batch comes back. The queue's redrive policy
//! moves a message to the failure queue after `max_receive_count` deliveries.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use serde_json::{json, Value};

/// How the local event source mapping reads the queue.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub batch_size: usize,
    pub window: Duration,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
}

/// The ingest queue and its failure queue, created if missing.
#[derive(Debug, Clone)]
pub struct Queues {
    pub url: String,
    pub arn: String,
    pub failed_url: String,
}

fn sdk_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Creates (or finds) `name` and `name-failed`, with the redrive policy between them.
pub async fn ensure_queues(client: &Client, name: &str, mapping: &Mapping) -> Result<Queues, String> {
    let failed_name = format!("{name}-failed");
    let failed_url = client
        .create_queue()
        .queue_name(&failed_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| sdk_error("create the failure queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .unwrap_or_default();
    let failed_arn = queue_arn(client, &failed_url).await?;
    let redrive = json!({"deadLetterTargetArn": failed_arn, "maxReceiveCount": mapping.max_receive_count});
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, mapping.visibility_timeout.as_secs().to_string())
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| sdk_error("create the ingest queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .unwrap_or_default();
    let arn = queue_arn(client, &url).await?;
    Ok(Queues { url, arn, failed_url })
}

async fn queue_arn(client: &Client, url: &str) -> Result<String, String> {
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error("read the queue's ARN", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| format!("the queue {url} has no ARN"))
}

/// Sends one S3 event to the queue, as S3's notification does.
pub async fn send(client: &Client, queues: &Queues, event: &Value) -> Result<(), String> {
    client
        .send_message()
        .queue_url(&queues.url)
        .message_body(event.to_string())
        .send()
        .await
        .map_err(|e| sdk_error("send to the ingest queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// Up to `batch_size` messages, gathered for at most `window` (a long poll for the first).
pub async fn receive_batch(client: &Client, queues: &Queues, mapping: &Mapping) -> Result<Vec<Message>, String> {
    let started = Instant::now();
    let mut batch = Vec::new();
    while batch.len() < mapping.batch_size {
        let left = mapping.window.saturating_sub(started.elapsed());
        if !batch.is_empty() && left.is_zero() {
            break;
        }
        // The first message is waited for up to 5 s; later ones only within the batching window.
        let wait = if batch.is_empty() { 5 } else { left.as_secs().min(5) as i32 };
        let output = client
            .receive_message()
            .queue_url(&queues.url)
            .max_number_of_messages((mapping.batch_size - batch.len()).min(10) as i32)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_error("receive from the ingest queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            if batch.is_empty() {
                return Ok(batch);
            }
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
            continue;
        }
        batch.extend(messages);
    }
    Ok(batch)
}

/// The event Lambda's event source mapping gives the function for these messages.
pub fn sqs_event(messages: &[Message], queues: &Queues, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect())
                .unwrap_or_default();
            json!({
                "messageId": m.message_id().unwrap_or_default(),
                "receiptHandle": m.receipt_handle().unwrap_or_default(),
                "body": m.body().unwrap_or_default(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body().unwrap_or_default(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queues.arn,
                "awsRegion": region,
            })
        })
        .collect();
    json!({"Records": records})
}

/// The ids of the messages the function reported failed (its `batchItemFailures`); `None` when
/// the answer is not a batch response, which fails the whole batch as Lambda does.
pub fn failed_ids(response: &Value) -> Option<Vec<String>> {
    let failures = response.get("batchItemFailures")?.as_array()?;
    Some(failures.iter().filter_map(|f| f.get("itemIdentifier")?.as_str().map(str::to_string)).collect())
}

/// Deletes the messages that succeeded: every one whose id is not in `failed`.
pub async fn delete_succeeded(
    client: &Client,
    queues: &Queues,
    messages: &[Message],
    failed: &[String],
) -> Result<usize, String> {
    let done: Vec<&Message> =
        messages.iter().filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id())).collect();
    for chunk in done.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        client
            .delete_message_batch()
            .queue_url(&queues.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_error("delete processed messages", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    }
    Ok(done.len())
}

/// What one batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polled {
    pub received: usize,
    /// The messages the function reported failed: they come back after the visibility timeout.
    pub failed: Vec<String>,
    pub deleted: usize,
    /// The invocation failed (or did not answer with a batch response): nothing was deleted.
    pub invocation_failed: bool,
}

/// One turn of the event source mapping: a batch received, `invoke` called with its SQS event,
/// the succeeded messages deleted. `None` when the queue had nothing.
pub async fn poll_once<F, Fut>(
    client: &Client,
    queues: &Queues,
    mapping: &Mapping,
    region: &str,
    invoke: F,
) -> Result<Option<Polled>, String>
where
    F: FnOnce(Value) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let messages = receive_batch(client, queues, mapping).await?;
    if messages.is_empty() {
        return Ok(None);
    }
    let mut polled = Polled { received: messages.len(), ..Default::default() };
    // As Lambda: a failed invocation, or an answer that is not a batch response, deletes nothing,
    // and the whole batch comes back after the visibility timeout.
    let failed = match invoke(sqs_event(&messages, queues, region)).await {
        Ok(body) => serde_json::from_str::<Value>(&body).ok().as_ref().and_then(failed_ids),
        Err(e) => {
            tracing::error!(messages = messages.len(), error = %e, "ingest failed on a batch; it is delivered again");
            None
        }
    };
    let Some(failed) = failed else {
        polled.invocation_failed = true;
        return Ok(Some(polled));
    };
    polled.deleted = delete_succeeded(client, queues, &messages, &failed).await?;
    polled.failed = failed;
    Ok(Some(polled))
}

/// Moves every message of the failure queue back to the ingest queue (SQS's "start DLQ redrive").
pub async fn redrive(client: &Client, queues: &Queues) -> Result<usize, String> {
    let mut moved = 0;
    loop {
        let output = client
            .receive_message()
            .queue_url(&queues.failed_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| sdk_error("receive from the failure queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for message in messages {
            client
                .send_message()
                .queue_url(&queues.url)
                .message_body(message.body().unwrap_or_default())
                .send()
                .await
                .map_err(|e| sdk_error("send to the ingest queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            client
                .delete_message()
                .queue_url(&queues.failed_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| sdk_error("delete from the failure queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            moved += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_event_has_what_lambda_sends_and_failures_are_read_back() {
        let queues =
            Queues { url: "u".into(), arn: "arn:aws:sqs:us-east-1:000000000000:ingest".into(), failed_url: "f".into() };
        let message = Message::builder().message_id("m1").receipt_handle("r1").body("{\"Records\": []}").build();
        let event = sqs_event(&[message], &queues, "us-east-1");
        let record = &event["Records"][0];
        assert_eq!((record["messageId"].as_str(), record["eventSource"].as_str()), (Some("m1"), Some("aws:sqs")));
        assert_eq!(record["eventSourceARN"], queues.arn);
        let parsed: shared::events::SqsEvent = serde_json::from_value(event).expect("a valid SQS event");
        assert_eq!(parsed.records[0].body.as_deref(), Some("{\"Records\": []}"));
        assert_eq!(failed_ids(&json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})), Some(vec!["m1".into()]));
        assert_eq!(failed_ids(&json!({"batchItemFailures": []})), Some(vec![]));
        assert_eq!(failed_ids(&json!({"indexed": []})), None, "not a batch answer: the whole batch failed");
    }
}
