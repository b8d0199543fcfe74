//! The experiment on an RRS request: Select Columns in Dataset (the text column) → Feature
//! Hashing, on `input1` given as a table (`{"ColumnNames", "Values"}`) or, with
//! `format=swagger`, as a list of `{column: value}` objects; the answer in the same shape.

use crate::args::Opts;
use crate::errors::{shown, INPUT_MISMATCH_ERROR, INPUT_PARSE_ERROR, OUT_OF_MEMORY_LIMIT};
use crate::hashing::Hashing;
use axum::response::Response;
use serde_json::{json, Map, Value};

pub fn cell_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn parse_error(detail: &str) -> Response {
    INPUT_PARSE_ERROR.reply(&[detail])
}

fn not_scalar(i: usize, column: &str) -> Response {
    parse_error(&format!("row {i}, column \"{}\" is not a single value", shown(column)))
}

/// The texts of the selected column of a table input, `{"ColumnNames": [...], "Values": [[...]]}`.
pub fn texts_from_table(column: &str, input: &Value) -> Result<Vec<String>, Response> {
    let names = input.get("ColumnNames").and_then(Value::as_array);
    let values = input.get("Values").and_then(Value::as_array);
    let (Some(names), Some(values)) = (names, values) else {
        return Err(parse_error(
            "input1 must be an object with ColumnNames (a list of names) and Values (a list of rows); \
             a list of {column: value} objects needs format=swagger",
        ));
    };
    let col = names.iter().position(|n| n.as_str() == Some(column)).ok_or_else(|| INPUT_MISMATCH_ERROR.reply(&[]))?;
    let mut texts = Vec::with_capacity(values.len());
    for (i, row) in values.iter().enumerate() {
        let row = row
            .as_array()
            .filter(|r| r.len() == names.len())
            .ok_or_else(|| parse_error(&format!("row {i} of input1 does not have {} values, one per name in ColumnNames", names.len())))?;
        texts.push(cell_text(&row[col]).ok_or_else(|| not_scalar(i, column))?);
    }
    Ok(texts)
}

/// The texts of the selected column of a `format=swagger` input: a list of row objects.
pub fn texts_from_rows(column: &str, input: &Value) -> Result<Vec<String>, Response> {
    let rows = input
        .as_array()
        .ok_or_else(|| parse_error("with format=swagger, input1 must be a list of {column: value} objects, one per row"))?;
    let mut texts = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_object().ok_or_else(|| parse_error(&format!("row {i} of input1 is not a {{column: value}} object")))?;
        let cell = row.get(column).ok_or_else(|| INPUT_MISMATCH_ERROR.reply(&[]))?;
        texts.push(cell_text(cell).ok_or_else(|| not_scalar(i, column))?);
    }
    Ok(texts)
}

/// The most output cells (rows × columns) one RRS call may produce: `--max-blob-bytes / 64`
/// (1 Mi cells by default; the answer is built in memory, some 100 bytes a cell at its peak).
pub fn max_cells(opts: &Opts) -> u64 {
    opts.max_blob as u64 / 64
}

/// Refuses, before hashing anything, an answer too large to build (the hashing parameters
/// can ask for 2^31 columns a row): MemoryQuotaViolation / OutOfMemoryLimit, as a model that
/// outgrows its memory.
pub fn check_size(opts: &Opts, h: Hashing, rows: usize) -> Result<(), Response> {
    let cells = (rows as u64).saturating_mul(h.columns() as u64 + 1);
    if cells > max_cells(opts) {
        let mb = (opts.max_blob as u64).div_ceil(1 << 20);
        return Err(OUT_OF_MEMORY_LIMIT.reply(&[&mb.to_string()]));
    }
    Ok(())
}

/// One output row: the text, then the count of each hashed feature column, all strings.
pub fn hashed_row(h: Hashing, text: &str) -> Vec<String> {
    std::iter::once(text.to_string()).chain(h.counts(text).map(|c| c.to_string())).collect()
}

/// The table answer: ColumnNames, ColumnTypes (only with `details=true`, as the help page
/// says) and Values.
pub fn table_output(column: &str, h: Hashing, texts: &[String], details: bool) -> Value {
    let rows: Vec<Vec<String>> = texts.iter().map(|t| hashed_row(h, t)).collect();
    let mut table = json!({"ColumnNames": h.column_names(column), "Values": rows});
    if details {
        let mut types = vec!["String".to_string()];
        types.extend(std::iter::repeat_n("Int32".to_string(), h.columns()));
        table["ColumnTypes"] = json!(types);
    }
    table
}

/// The `format=swagger` answer: one `{column: value}` object per row, values as strings.
pub fn swagger_output(column: &str, h: Hashing, texts: &[String]) -> Value {
    let names = h.column_names(column);
    let rows = texts.iter().map(|t| {
        let obj: Map<String, Value> = names.iter().cloned().zip(hashed_row(h, t).into_iter().map(Value::String)).collect();
        Value::Object(obj)
    });
    Value::Array(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    const H: Hashing = Hashing { bitsize: 3, ngrams: 2 };

    async fn detail(r: Response) -> (StatusCode, String, String) {
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        (status, v["error"]["code"].as_str().unwrap().into(), v["error"]["details"][0]["code"].as_str().unwrap().into())
    }

    #[test]
    fn scores_rows_and_selects_the_column() {
        let input = json!({"ColumnNames": ["Col1", "Col2"], "Values": [["x", "This is a good day"], ["y", "hello world"]]});
        let texts = texts_from_table("Col2", &input).unwrap();
        let t = table_output("Col2", H, &texts, true);
        assert_eq!(t["ColumnNames"].as_array().unwrap().len(), 9);
        assert_eq!(t["ColumnNames"][1], "Col2_HashingFeature.0");
        assert_eq!(t["ColumnTypes"][0], "String");
        assert_eq!(t["ColumnTypes"][8], "Int32");
        assert_eq!(t["Values"][0], json!(["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]));
        assert_eq!(t["Values"].as_array().unwrap().len(), 2);
        assert!(table_output("Col2", H, &texts, false).get("ColumnTypes").is_none());
    }

    #[tokio::test]
    async fn bad_tables_are_bad_user_arguments() {
        for (bad, code) in [
            (json!({"ColumnNames": ["Col1"], "Values": [["x"]]}), "InputMismatchError"),
            (json!({"ColumnNames": ["Col2"], "Values": [["a", "b"]]}), "InputParseError"),
            (json!({"ColumnNames": ["Col2"], "Values": [[["nested"]]]}), "InputParseError"),
            (json!({"ColumnNames": ["Col2"]}), "InputParseError"),
            (json!({"Values": []}), "InputParseError"),
            (json!([{"Col2": "a"}]), "InputParseError"),
        ] {
            let r = texts_from_table("Col2", &bad).unwrap_err();
            assert_eq!(detail(r).await, (StatusCode::BAD_REQUEST, "BadUserArgument".into(), code.into()), "{bad}");
        }
    }

    #[tokio::test]
    async fn swagger_rows_in_and_out() {
        let input = json!([{"Col1": 1, "Col2": "This is a good day"}, {"Col2": "hello world"}]);
        let texts = texts_from_rows("Col2", &input).unwrap();
        let out = swagger_output("Col2", H, &texts);
        assert_eq!(out[0]["Col2"], "This is a good day");
        assert_eq!(out[0]["Col2_HashingFeature.2"], "2");
        assert_eq!(out[1]["Col2"], "hello world");
        assert_eq!(out[0].as_object().unwrap().len(), 9);
        for (bad, code) in [
            (json!({"ColumnNames": ["Col2"], "Values": [["a"]]}), "InputParseError"),
            (json!([{"Col1": "a"}]), "InputMismatchError"),
            (json!(["a"]), "InputParseError"),
            (json!([{"Col2": {"x": 1}}]), "InputParseError"),
        ] {
            let r = texts_from_rows("Col2", &bad).unwrap_err();
            assert_eq!(detail(r).await.2, code, "{bad}");
        }
    }

    #[tokio::test]
    async fn oversized_answers_are_refused_before_hashing() {
        let opts = Opts { max_blob: 8 << 20, ..Opts::new() };
        assert!(check_size(&opts, H, 10_000).is_ok());
        let r = check_size(&opts, Hashing { bitsize: 31, ngrams: 2 }, 1).unwrap_err();
        let (status, code, detail_code) = detail(r).await;
        assert_eq!(
            (status, code.as_str(), detail_code.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "MemoryQuotaViolation", "OutOfMemoryLimit")
        );
        // 128 Ki cells: one row of 2^16 + 1 cells fits, two do not.
        assert!(check_size(&opts, Hashing { bitsize: 16, ngrams: 2 }, 1).is_ok());
        assert!(check_size(&opts, Hashing { bitsize: 16, ngrams: 2 }, 2).is_err());
    }
}
