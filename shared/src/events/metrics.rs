//! CloudWatch metrics through the embedded metric format: one JSON line on stdout per
//! invocation, which Lambda's log pipeline turns into metrics without an API call or an agent.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use serde_json::{json, Map, Value};

/// The namespace the template's alarms read.
pub const NAMESPACE: &str = "ClipSearch";

/// The EMF line for `counts` (metric name → count), under the dimension `Function`.
pub fn emf_line(function: &str, counts: &[(&str, u64)], timestamp_ms: i64) -> String {
    let metrics: Vec<Value> = counts.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": metrics}],
        }),
    );
    line.insert("Function".into(), Value::String(function.to_string()));
    for (name, count) in counts {
        line.insert((*name).to_string(), json!(count));
    }
    Value::Object(line).to_string()
}

/// Prints the counts as one EMF line (stdout is the function's log stream in Lambda).
pub fn emit(function: &str, counts: &[(&str, u64)]) {
    println!("{}", emf_line(function, counts, crate::time::epoch_ms(std::time::SystemTime::now())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_follows_the_embedded_metric_format() {
        let line = emf_line("ingest", &[("ObjectsSkipped", 2), ("IngestFailures", 0)], 1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(directive["Metrics"][0], json!({"Name": "ObjectsSkipped", "Unit": "Count"}));
        // Every metric and dimension named in the directive is a member of the line itself.
        assert_eq!(v["Function"], "ingest");
        assert_eq!(v["ObjectsSkipped"], 2);
        assert_eq!(v["IngestFailures"], 0);
        assert!(!line.contains('\n'), "one line");
    }
}
