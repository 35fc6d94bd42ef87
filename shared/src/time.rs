//! RFC 3339 times, the one date format of the API, the S3 events and the logs, on `chrono`.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

/// `2026-11-26T17:00:00Z`, with a fraction (3, 6 or 9 digits) only when the time has one.
pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Milliseconds since the epoch, written with milliseconds at a UTC offset in minutes:
/// `2024-05-01T02:00:00.123+02:00`, or `…Z` at offset 0. `None` outside chrono's range.
pub fn rfc3339_ms(ms: i64, offset_minutes: i32) -> Option<String> {
    let offset = FixedOffset::east_opt(offset_minutes.checked_mul(60)?)?;
    let utc = DateTime::<Utc>::from_timestamp_millis(ms)?;
    Some(utc.with_timezone(&offset).to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Milliseconds since the epoch of an RFC 3339 date-time (any offset, any fraction).
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis())
}

/// Milliseconds since the epoch of a system time (0 before the epoch).
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_714_521_600_123);
        assert_eq!(rfc3339(t), "2024-05-01T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_714_521_600)), "2024-05-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_714_521_600_123, 120).unwrap(), "2024-05-01T02:00:00.123+02:00");
        assert_eq!(rfc3339_ms(951_782_400_000, -90).unwrap(), "2000-02-28T22:30:00.000-01:30");
        assert_eq!(rfc3339_ms(0, 0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339_ms("2024-05-01T02:00:00.123+02:00").unwrap(), 1_714_521_600_123);
        assert!(parse_rfc3339_ms("2024-05-01T00:00:00").is_err());
        assert_eq!(epoch_ms(t), 1_714_521_600_123);
        assert_eq!(rfc3339_ms(0, 24 * 60), None, "offsets stay within a day");
    }
}
