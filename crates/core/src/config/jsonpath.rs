//! The JSON path (`apis[0].operations[2].url_template`) at a line/column of a JSON text, so
//! a serde_json error can name the field it happened in without a tracking deserializer.

enum Frame {
    /// `confirmed`: the key's `:` was read.
    Object {
        key: Option<String>,
        expect_key: bool,
        confirmed: bool,
    },
    Array {
        index: usize,
    },
}

/// The path of the value being read at 1-based `line`/`column` (serde_json's error position).
/// `syntax`: the text is not JSON there. Then a string in a key's place may be a value the
/// operator wrote (a lost `:` or `,`), perhaps a secret: only keys whose `:` was read are named.
pub fn path_at(text: &[u8], line: usize, column: usize, syntax: bool) -> String {
    let stop = offset_of(text, line, column);
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while let Some(&c) = text.get(i).filter(|_| i < stop) {
        match c {
            b'{' => stack.push(Frame::Object { key: None, expect_key: true, confirmed: false }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { key, expect_key, confirmed }) => {
                    *key = None;
                    *expect_key = true;
                    *confirmed = false;
                }
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expect_key, confirmed, .. }) = stack.last_mut() {
                    *expect_key = false;
                    *confirmed = true;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while let Some(&c) = text.get(i).filter(|&&c| c != b'"') {
                    if c == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                // A string that ends past the error is not a key the parser read: with a `:`
                // lost, the error is at the next string, which is a value (a secret, perhaps).
                if let Some(Frame::Object { key, expect_key: true, confirmed }) = stack.last_mut().filter(|_| i < stop) {
                    *key = Some(String::from_utf8_lossy(text.get(start..i.min(text.len())).unwrap_or_default()).into_owned());
                    *confirmed = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for f in &stack {
        match f {
            Frame::Object { key: Some(_), confirmed: false, .. } if syntax => {}
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                // A key is the operator's text: controls are escaped so the refusal stays one line.
                for c in k.chars() {
                    if c.is_control() {
                        path.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
                    } else {
                        path.push(c);
                    }
                }
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

fn offset_of(text: &[u8], line: usize, column: usize) -> usize {
    let mut l = 1;
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if l == line {
            break;
        }
        if b == b'\n' {
            l += 1;
            start = i + 1;
        }
    }
    start + column
}
