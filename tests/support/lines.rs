//! Realistic structured JSON log lines, each carrying its sequence number so that tests can
//! check every line arrived exactly once.

use std::time::{SystemTime, UNIX_EPOCH};

pub const SERVICES: [&str; 4] = ["gateway", "router", "model-server", "memory-engine"];
pub const LEVELS: [&str; 3] = ["INFO", "WARNING", "ERROR"];

/// Now, in Unix seconds.
pub fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Now minus `seconds`, in nanoseconds.
pub fn nanos_ago(seconds: i64) -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0) - seconds * 1_000_000_000
}

pub fn rfc3339(nanos: i64) -> String {
    sluice::formats::time::format_rfc3339_nanos(nanos)
}

/// The line with sequence number `seq`, timestamped `base + seq` microseconds.
pub fn structured(seq: usize, base: i64) -> String {
    let service = SERVICES[seq % SERVICES.len()];
    let level = LEVELS[seq % LEVELS.len()];
    format!(
        r#"{{"timestamp":"{}","level":"{level}","service":"{service}","logger":"app.http","message":"request completed \"ok\"","trace_id":"{:032x}","span_id":"{:016x}","method":"GET","path":"/api/v1/chat","status":200,"duration_ms":12.5,"user_id":"u-{}","seq":{seq}}}"#,
        rfc3339(base + seq as i64 * 1000),
        seq as u128 * 7919 + 1,
        seq as u64 * 104729 + 1,
        seq % 100,
    )
}

/// The sequence number of a line written by [`structured`].
pub fn seq_of(line: &str) -> Option<usize> {
    let at = line.rfind("\"seq\":")? + 6;
    line[at..].trim_end_matches('}').parse().ok()
}
