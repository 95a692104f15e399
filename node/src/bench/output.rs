//! Where results go: JSON lines, CSV rows, a plain table.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::Failure;

/// Appends `row` as one JSON object on its own line.
pub(crate) fn append_json(path: &Path, row: &impl Serialize) -> Result<(), Failure> {
    let line = serde_json::to_string(row).map_err(super::failure)?;
    append(path, &format!("{line}\n"))
}

/// Appends `row`'s `columns` as one CSV line, after a header line if the
/// file is new or empty. Missing fields are left empty; arrays are joined
/// with `;`.
pub(crate) fn append_csv(
    path: &Path,
    columns: &[&str],
    row: &impl Serialize,
) -> Result<(), Failure> {
    let value = serde_json::to_value(row).map_err(super::failure)?;
    let empty = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut text = String::new();
    if empty {
        text.push_str(&columns.join(","));
        text.push('\n');
    }
    let cells: Vec<String> = columns
        .iter()
        .map(|c| csv_cell(value.get(*c).unwrap_or(&serde_json::Value::Null)))
        .collect();
    text.push_str(&cells.join(","));
    text.push('\n');
    append(path, &text)
}

fn csv_cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    let raw = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(csv_cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    };
    if raw.contains([',', '"', '\n']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw
    }
}

fn append(path: &Path, text: &str) -> Result<(), Failure> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| super::failure(format_args!("opening {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| super::failure(format_args!("writing {}: {e}", path.display())))
}

/// Formats rows as a right-aligned table (the first column left-aligned).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                s.push_str(&format!("{cell:<w$}"));
            } else {
                s.push_str(&format!("  {cell:>w$}"));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `1234567.8` → `1,234,568`.
pub(crate) fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// An optional number with `digits` decimals, `-` when absent.
pub(crate) fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-1234.0), "-1,234");
    }

    #[test]
    fn csv_header_once_and_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let row = serde_json::json!({"a": 1, "b": "x,y", "c": [1, 2]});
        append_csv(&path, &["a", "b", "c", "d"], &row).unwrap();
        append_csv(&path, &["a", "b", "c", "d"], &row).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "a,b,c,d\n1,\"x,y\",1;2,\n1,\"x,y\",1;2,\n");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["name", "n"],
            &[
                vec!["a".into(), "1".into()],
                vec!["bbb".into(), "22".into()],
            ],
        );
        assert_eq!(t, "name   n\na      1\nbbb   22\n");
    }
}
