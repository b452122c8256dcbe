//! Rendering: the `cloudsocket tune` table and its `--json` form, and the `--apply` results.
//!
//! Owns text layout only. JSON is written by hand (flat objects of strings and booleans), so the
//! crate needs no serde. It does not print: callers write the returned strings.

use std::fmt::Write;

use super::{ApplyResult, Check, Outcome};

const HEADER: [&str; 5] = ["check", "found", "recommended", "ok", "command"];

/// An aligned table: check, found, recommended, ok (`yes`, `NO`, or `opt` for an optional
/// check not met), command. One line per check after the header, each ending in `\n`.
pub fn render_table(checks: &[Check]) -> String {
    let rows: Vec<[&str; 5]> = checks
        .iter()
        .map(|check| {
            let ok = match (check.ok, check.optional) {
                (true, _) => "yes",
                (false, false) => "NO",
                (false, true) => "opt",
            };
            [
                &check.name,
                &check.found,
                &check.recommended,
                ok,
                &check.command,
            ]
        })
        .collect();
    let mut widths = HEADER.map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&HEADER).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            match index {
                4 => line.push_str(cell),
                _ => {
                    let _ = write!(line, "{cell:width$}  ");
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The checks as a JSON array of objects with `name`, `found`, `recommended`, `command` (strings)
/// and `ok`, `optional` (booleans). One line, no trailing newline.
pub fn render_json(checks: &[Check]) -> String {
    let objects: Vec<String> = checks
        .iter()
        .map(|check| {
            format!(
                "{{\"name\":{},\"found\":{},\"recommended\":{},\"command\":{},\"ok\":{},\"optional\":{}}}",
                string(&check.name),
                string(&check.found),
                string(&check.recommended),
                string(&check.command),
                check.ok,
                check.optional
            )
        })
        .collect();
    format!("[{}]", objects.join(","))
}

/// The `--apply` results, one line each (see [`ApplyResult`]'s `Display`).
pub fn render_apply(results: &[ApplyResult]) -> String {
    results.iter().map(|result| format!("{result}\n")).collect()
}

/// The `--apply` results as a JSON array of `{"name", "outcome": "applied"|"skipped"|"failed",
/// "detail"}` objects.
pub fn render_apply_json(results: &[ApplyResult]) -> String {
    let objects: Vec<String> = results
        .iter()
        .map(|result| {
            let (outcome, detail) = match &result.outcome {
                Outcome::Applied { value } => ("applied", value),
                Outcome::Skipped { reason } => ("skipped", reason),
                Outcome::Failed { reason } => ("failed", reason),
            };
            format!(
                "{{\"name\":{},\"outcome\":\"{outcome}\",\"detail\":{}}}",
                string(&result.name),
                string(detail)
            )
        })
        .collect();
    format!("[{}]", objects.join(","))
}

/// A JSON string literal.
fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for char in text.chars() {
        match char {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            char if u32::from(char) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(char));
            }
            char => out.push(char),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Fix;

    fn check(name: &str, found: &str, ok: bool, optional: bool) -> Check {
        Check {
            name: name.to_string(),
            found: found.to_string(),
            recommended: ">= 4096".to_string(),
            command: format!("sysctl -w {name}=4096"),
            ok,
            optional,
            fix: Fix::Manual,
        }
    }

    #[test]
    fn table_is_aligned() {
        let checks = [
            check("net.core.somaxconn", "4096", true, false),
            check("fs.nr_open", "1", false, false),
            check("busy", "0", false, true),
        ];
        let expect = "\
check               found  recommended  ok   command
net.core.somaxconn  4096   >= 4096      yes  sysctl -w net.core.somaxconn=4096
fs.nr_open          1      >= 4096      NO   sysctl -w fs.nr_open=4096
busy                0      >= 4096      opt  sysctl -w busy=4096
";
        assert_eq!(render_table(&checks), expect);
    }

    #[test]
    fn json_escapes() {
        let checks = [check("a\"b", "x\\y\n\u{1}", true, false)];
        let expect = "[{\"name\":\"a\\\"b\",\"found\":\"x\\\\y\\n\\u0001\",\"recommended\":\">= 4096\",\
                      \"command\":\"sysctl -w a\\\"b=4096\",\"ok\":true,\"optional\":false}]";
        assert_eq!(render_json(&checks), expect);
        assert_eq!(render_json(&[]), "[]");
    }

    #[test]
    fn apply_results() {
        let results = [
            ApplyResult {
                name: "a".to_string(),
                outcome: Outcome::Applied {
                    value: "2".to_string(),
                },
            },
            ApplyResult {
                name: "b".to_string(),
                outcome: Outcome::Failed {
                    reason: "read-only".to_string(),
                },
            },
        ];
        assert_eq!(
            render_apply(&results),
            "a: set to 2\nb: could not: read-only\n"
        );
        let json = "[{\"name\":\"a\",\"outcome\":\"applied\",\"detail\":\"2\"},\
                    {\"name\":\"b\",\"outcome\":\"failed\",\"detail\":\"read-only\"}]";
        assert_eq!(render_apply_json(&results), json);
    }
}
