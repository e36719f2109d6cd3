//! The `status` subcommand: one `GET /status` to a running broker's admin listener, printed as
//! a table (or passed on as JSON); the exit code says whether every database is fresh.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::healthcheck::{self, ProbeError};

/// How the status is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table, one database a line.
    Table,
    /// The JSON of `GET /status`, for scripts.
    Json,
}

/// Why the status could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("the answer of {0} is not the status JSON")]
    NotStatus(String),
}

/// The status URL of an admin listener given as a base URL (`http://127.0.0.1:2776`) or as the
/// status URL itself.
pub fn status_url(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with("/status") {
        base.to_owned()
    } else {
        format!("{base}/status")
    }
}

/// Reads the status at `url` and renders it as `output`; with it, whether every database is
/// fresh.
pub async fn fetch(
    url: &str,
    output: Output,
    timeout: Duration,
) -> Result<(String, bool), StatusError> {
    let body = healthcheck::get(url, timeout).await?;
    let status: Value =
        serde_json::from_slice(&body).map_err(|_| StatusError::NotStatus(url.into()))?;
    let all_fresh = status["all_fresh"]
        .as_bool()
        .ok_or_else(|| StatusError::NotStatus(url.into()))?;
    let text = match output {
        Output::Json => format!("{status:#}\n"),
        Output::Table => table(&status).ok_or_else(|| StatusError::NotStatus(url.into()))?,
    };
    Ok((text, all_fresh))
}

const COLUMNS: [&str; 9] = [
    "DATABASE",
    "STATE",
    "VERSION",
    "AGE",
    "SECRET",
    "LAST ROTATION",
    "NEXT ROTATION",
    "FAILURES",
    "NEXT RETRY",
];

/// The status as a table: versions cut to 8 characters, ages in whole seconds, `-` for what is
/// unknown. `None` when the JSON is not a status.
fn table(status: &Value) -> Option<String> {
    let text = |value: &Value| value.as_str().map_or_else(|| "-".to_owned(), sanitized);
    let mut rows = vec![COLUMNS.map(str::to_owned).to_vec()];
    for db in status["databases"].as_array()? {
        let version = text(&db["version_id"]);
        // Whole seconds; an age that is no duration (negative, huge) is shown as unknown.
        let age = db["age_seconds"]
            .as_f64()
            .and_then(|age| Duration::try_from_secs_f64(age.trunc()).ok())
            .map_or_else(
                || "-".to_owned(),
                |age| humantime::format_duration(age).to_string(),
            );
        rows.push(vec![
            text(&db["db"]),
            text(&db["state"]),
            version.chars().take(8).collect(),
            age,
            text(&db["secret_status"]),
            text(&db["last_rotated"]),
            text(&db["next_rotation"]),
            db["consecutive_failures"].as_u64()?.to_string(),
            text(&db["next_retry_at"]),
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(out, "{}", line.trim_end()).expect("writing to a String cannot fail");
    }
    Some(out)
}

/// A value as a terminal may show it: control characters replaced.
fn sanitized(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_status_url_is_completed_from_a_base_url() {
        assert_eq!(
            status_url("http://127.0.0.1:2776"),
            "http://127.0.0.1:2776/status"
        );
        assert_eq!(
            status_url("http://127.0.0.1:2776/"),
            "http://127.0.0.1:2776/status"
        );
        assert_eq!(status_url("http://h:1/status"), "http://h:1/status");
    }

    #[test]
    fn the_table_has_a_line_per_database_with_short_versions_and_dashes_for_the_unknown() {
        let status = json!({"all_fresh": false, "databases": [
            {"db": "orders", "state": "fresh", "version_id": "a8b3c1d2-0000-4000-8000-000000000000",
             "age_seconds": 125.4, "secret_status": "active", "last_rotated": "2026-11-28T01:00:00Z",
             "next_rotation": null, "consecutive_failures": 0, "next_retry_at": null},
            {"db": "new\u{1b}[31m", "state": "not_fetched", "version_id": null, "age_seconds": null,
             "secret_status": null, "last_rotated": null, "next_rotation": null,
             "consecutive_failures": 3, "next_retry_at": "2026-12-04T18:00:02Z"},
        ]});
        let out = table(&status).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("DATABASE"));
        assert!(lines[1].contains("a8b3c1d2  2m 5s"), "{out}");
        assert!(!lines[1].contains("0000-4000"));
        assert!(
            lines[2].contains("new?[31m"),
            "control characters replaced: {out}"
        );
        assert!(lines[2].contains(" 3 ") && lines[2].ends_with("2026-12-04T18:00:02Z"));
        assert_eq!(table(&json!({"databases": 1})), None);
    }
}
