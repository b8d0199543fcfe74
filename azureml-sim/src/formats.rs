//! A BES job's data: the input blob read as CSV (TSV when its name ends in `.tsv`), hashed
//! row by row, and written in the format the output blob's extension names: `.csv`, `.tsv` or
//! `.arff`, the extensions a dataset output takes (any other is refused at submission with
//! InvalidBlobExtension). The output is capped at `--max-blob-bytes`, checked before the
//! header when one row could not fit, and after each row.

use crate::args::Opts;
use crate::hashing::Hashing;

/// The output extensions, as InvalidBlobExtension lists them.
pub const OUTPUT_EXTENSIONS: &str = ".csv, .tsv, .arff";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Tsv,
    Arff,
}

impl Format {
    /// The format a blob name's extension names (in any letter case), if one of the three.
    pub fn of(blob: &str) -> Option<Format> {
        let name = blob.rsplit('/').next().unwrap_or(blob);
        match name.rsplit_once('.')?.1.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            "arff" => Some(Format::Arff),
            _ => None,
        }
    }
}

/// An ARFF quoted string: single quotes, backslash escapes.
fn arff_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

enum Out {
    Delimited(Box<csv::Writer<Vec<u8>>>),
    Arff(Vec<u8>),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Delimited(w) => w.get_ref().len(),
            Out::Arff(v) => v.len(),
        }
    }

    fn header(&mut self, column: &str, h: Hashing, max: usize) -> Result<(), String> {
        let names = std::iter::once(column.to_string()).chain((0..h.columns()).map(|i| format!("{column}_HashingFeature.{i}")));
        match self {
            Out::Delimited(w) => w.write_record(names).map_err(|e| e.to_string()),
            Out::Arff(v) => {
                v.extend_from_slice(b"@RELATION 'output1'\n\n");
                for (i, name) in names.enumerate() {
                    let kind = if i == 0 { "STRING" } else { "NUMERIC" };
                    v.extend_from_slice(format!("@ATTRIBUTE {} {kind}\n", arff_quote(&name)).as_bytes());
                    if v.len() > max {
                        return Err(too_large(max));
                    }
                }
                v.extend_from_slice(b"\n@DATA\n");
                Ok(())
            }
        }
    }

    fn row(&mut self, text: &str, h: Hashing) -> Result<(), String> {
        let counts = h.counts(text).map(|c| c.to_string());
        match self {
            Out::Delimited(w) => w.write_record(std::iter::once(text.to_string()).chain(counts)).map_err(|e| e.to_string()),
            Out::Arff(v) => {
                v.extend_from_slice(arff_quote(text).as_bytes());
                for c in counts {
                    v.push(b',');
                    v.extend_from_slice(c.as_bytes());
                }
                v.push(b'\n');
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<Vec<u8>, String> {
        match self {
            Out::Delimited(w) => w.into_inner().map_err(|e| e.to_string()),
            Out::Arff(v) => Ok(v),
        }
    }
}

fn too_large(max: usize) -> String {
    format!("The output would be larger than the {max}-byte limit.")
}

/// Reads the input (`input` names its format), hashes the text column of each row, writes
/// the output in `output`'s format.
pub fn hash_blob(opts: &Opts, h: Hashing, data: &[u8], input: Format, output: Format) -> Result<Vec<u8>, String> {
    let max = opts.max_blob;
    // Every row holds a text and 2^bitsize counts of at least two bytes each; the header names
    // each column in at least `column` + 18 bytes.
    let per_column = opts.column.len().max(2) + 18;
    if h.columns().saturating_mul(per_column) > max {
        return Err(too_large(max));
    }
    let delimiter = if input == Format::Tsv { b'\t' } else { b',' };
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).delimiter(delimiter).from_reader(data);
    let headers = rdr.headers().map_err(|e| format!("The input is not valid CSV: {e}"))?.clone();
    let col = headers
        .iter()
        .position(|h| h == opts.column)
        .ok_or_else(|| format!("Column with name or index \"{}\" not found in the input.", opts.column))?;
    let mut out = match output {
        Format::Csv => Out::Delimited(Box::new(csv::Writer::from_writer(Vec::new()))),
        Format::Tsv => Out::Delimited(Box::new(csv::WriterBuilder::new().delimiter(b'\t').from_writer(Vec::new()))),
        Format::Arff => Out::Arff(Vec::new()),
    };
    out.header(&opts.column, h, max)?;
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("The input is not valid CSV at row {}: {e}", i + 1))?;
        out.row(rec.get(col).unwrap_or(""), h)?;
        // The CSV writer buffers a little more than this counts; the bound holds within that.
        if out.len() > max {
            return Err(too_large(max));
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Opts {
        Opts { api_key: "k".into(), ..Opts::new() }
    }

    const H: Hashing = Hashing { bitsize: 3, ngrams: 2 };

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::of("dir/out.CSV"), Some(Format::Csv));
        assert_eq!(Format::of("out.tsv"), Some(Format::Tsv));
        assert_eq!(Format::of("a.b/out.arff"), Some(Format::Arff));
        for bad in ["out", "out.txt", "out.csv.gz", "a.csv/out", "out."] {
            assert_eq!(Format::of(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_csv_with_quoting() {
        let out = hash_blob(&opts(), H, b"Col1,Col2\n1,\"This is a good day\"\n2,\"a, b\"\n", Format::Csv, Format::Csv).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("Col2,Col2_HashingFeature.0,"));
        assert_eq!(lines.next().unwrap(), "This is a good day,1,1,2,2,0,2,0,1");
        assert!(lines.next().unwrap().starts_with("\"a, b\","));
        assert!(hash_blob(&opts(), H, b"Col1\n1\n", Format::Csv, Format::Csv).is_err());
    }

    #[test]
    fn writes_tsv_and_arff_and_reads_tsv() {
        let tsv = hash_blob(&opts(), H, b"Col1\tCol2\n1\tThis is a good day\n", Format::Tsv, Format::Tsv).unwrap();
        let tsv = String::from_utf8(tsv).unwrap();
        assert_eq!(tsv.lines().nth(1), Some("This is a good day\t1\t1\t2\t2\t0\t2\t0\t1"));
        let arff = hash_blob(&opts(), H, b"Col2\nit's a day\nThis is a good day\n", Format::Csv, Format::Arff).unwrap();
        let arff = String::from_utf8(arff).unwrap();
        assert!(
            arff.starts_with("@RELATION 'output1'\n\n@ATTRIBUTE 'Col2' STRING\n@ATTRIBUTE 'Col2_HashingFeature.0' NUMERIC\n"),
            "{arff}"
        );
        let data: Vec<&str> = arff.split("@DATA\n").nth(1).unwrap().lines().collect();
        assert!(data[0].starts_with("'it\\'s a day',"), "{}", data[0]);
        assert_eq!(data[1], "'This is a good day',1,1,2,2,0,2,0,1");
    }

    #[test]
    fn hashed_output_is_capped() {
        let mut o = opts();
        o.max_blob = 10_000;
        let input: String = std::iter::once("Col2\n".to_string()).chain((0..1000).map(|i| format!("w{i}\n"))).collect();
        assert!(input.len() < 10_000);
        assert!(hash_blob(&o, H, input.as_bytes(), Format::Csv, Format::Csv).unwrap_err().contains("10000-byte limit"));
        o.max_blob = 1 << 20;
        assert!(hash_blob(&o, H, input.as_bytes(), Format::Csv, Format::Csv).is_ok());
        // 2^31 columns: refused before anything is written (or allocated).
        let wide = Hashing { bitsize: 31, ngrams: 2 };
        for f in [Format::Csv, Format::Arff] {
            assert!(hash_blob(&o, wide, b"Col2\na\n", Format::Csv, f).unwrap_err().contains("byte limit"));
        }
        // A header that fits row by row but not as ARFF's attribute lines.
        o.max_blob = 1000;
        let mid = Hashing { bitsize: 5, ngrams: 2 };
        assert!(hash_blob(&o, mid, b"Col2\na\n", Format::Csv, Format::Csv).is_ok());
        assert!(hash_blob(&o, mid, b"Col2\na\n", Format::Csv, Format::Arff).is_err());
    }
}
