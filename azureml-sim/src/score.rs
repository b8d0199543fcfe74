//! The experiment: Select Columns in Dataset (the text column) → Feature Hashing, on an RRS
//! table (JSON) or a BES input (CSV).

use crate::args::Opts;
use crate::errors::bad_argument;
use axum::response::Response;
use serde_json::{json, Value};

pub fn cell_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Select Columns in Dataset (the text column) → Feature Hashing, on an RRS table.
pub fn score_table(opts: &Opts, input: &Value) -> Result<Value, Response> {
    let names = input
        .get("ColumnNames")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_argument("MissingInputColumns", "input1.ColumnNames is required and must be a list."))?;
    let values = input
        .get("Values")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_argument("MissingInputValues", "input1.Values is required and must be a list of rows."))?;
    let col = names
        .iter()
        .position(|n| n.as_str() == Some(opts.column.as_str()))
        .ok_or_else(|| bad_argument("ColumnNotFound", &format!("Column with name or index \"{}\" not found in input1.", opts.column)))?;
    let mut rows = Vec::with_capacity(values.len());
    for (i, row) in values.iter().enumerate() {
        let row = row
            .as_array()
            .filter(|r| r.len() == names.len())
            .ok_or_else(|| bad_argument("InputParseError", &format!("Row {i} of input1 does not have {} values.", names.len())))?;
        let text = cell_text(&row[col])
            .ok_or_else(|| bad_argument("InputParseError", &format!("Row {i}, column \"{}\" is not a scalar.", opts.column)))?;
        rows.push(hashed_row(opts, &text));
    }
    let columns = opts.hashing.column_names(&opts.column);
    let mut types = vec!["String".to_string()];
    types.extend(std::iter::repeat_n("Int32".to_string(), opts.hashing.columns()));
    Ok(json!({"ColumnNames": columns, "ColumnTypes": types, "Values": rows}))
}

pub fn hashed_row(opts: &Opts, text: &str) -> Vec<String> {
    std::iter::once(text.to_string()).chain(opts.hashing.features(text).into_iter().map(|c| c.to_string())).collect()
}

pub fn hash_csv(opts: &Opts, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(data);
    let headers = rdr.headers().map_err(|e| format!("The input is not valid CSV: {e}"))?.clone();
    let col = headers
        .iter()
        .position(|h| h == opts.column)
        .ok_or_else(|| format!("Column with name or index \"{}\" not found in the input.", opts.column))?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let names = opts.hashing.column_names(&opts.column);
    w.write_record(&names).map_err(|e| e.to_string())?;
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("The input is not valid CSV at row {}: {e}", i + 1))?;
        let text = rec.get(col).unwrap_or("");
        w.write_record(hashed_row(opts, text)).map_err(|e| e.to_string())?;
        // The writer buffers a little more than this counts; the bound holds within that.
        if w.get_ref().len() > opts.max_blob {
            return Err(format!("The output would be larger than the {}-byte limit.", opts.max_blob));
        }
    }
    w.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn opts() -> Opts {
        Opts { api_key: "k".into(), ..Opts::new() }
    }

    #[test]
    fn scores_rows_and_selects_the_column() {
        let t =
            score_table(&opts(), &json!({"ColumnNames": ["Col1", "Col2"], "Values": [["x", "This is a good day"], ["y", "hello world"]]}))
                .unwrap();
        assert_eq!(t["ColumnNames"].as_array().unwrap().len(), 9);
        assert_eq!(t["ColumnNames"][1], "Col2_HashingFeature.0");
        assert_eq!(t["ColumnTypes"][0], "String");
        assert_eq!(t["ColumnTypes"][8], "Int32");
        assert_eq!(t["Values"][0], json!(["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]));
        assert_eq!(t["Values"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rejects_missing_column_and_bad_rows() {
        for bad in [
            json!({"ColumnNames": ["Col1"], "Values": [["x"]]}),
            json!({"ColumnNames": ["Col2"], "Values": [["a", "b"]]}),
            json!({"ColumnNames": ["Col2"], "Values": [[["nested"]]]}),
            json!({"ColumnNames": ["Col2"]}),
            json!({"Values": []}),
        ] {
            assert_eq!(score_table(&opts(), &bad).unwrap_err().status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn hashes_csv_with_quoting() {
        let out = hash_csv(&opts(), b"Col1,Col2\n1,\"This is a good day\"\n2,\"a, b\"\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("Col2,Col2_HashingFeature.0,"));
        assert_eq!(lines.next().unwrap(), "This is a good day,1,1,2,2,0,2,0,1");
        assert!(lines.next().unwrap().starts_with("\"a, b\","));
        assert!(hash_csv(&opts(), b"Col1\n1\n").is_err());
    }

    #[test]
    fn hashed_output_is_capped() {
        let mut o = opts();
        o.max_blob = 10_000;
        let input: String = std::iter::once("Col2\n".to_string()).chain((0..1000).map(|i| format!("w{i}\n"))).collect();
        assert!(input.len() < 10_000);
        assert!(hash_csv(&o, input.as_bytes()).unwrap_err().contains("10000-byte limit"));
        o.max_blob = 1 << 20;
        assert!(hash_csv(&o, input.as_bytes()).is_ok());
    }
}
