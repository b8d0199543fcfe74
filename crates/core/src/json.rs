//! The one JSON string escaper: every string mlgate writes into JSON (APIM replies, the portal's
//! documents, the admin reports) goes through [`push_str`]. Besides what JSON requires, it
//! escapes `<`, `>`, `&` and the two JavaScript line separators, so a name an operator wrote can
//! never end a `<script>` block or be sniffed as markup, wherever the JSON lands.

/// Appends `s` as a quoted JSON string.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_u(out, c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => push_u(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `\uXXXX` for a character of the Basic Multilingual Plane (the only ones escaped here).
fn push_u(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = c as u32;
    out.push_str("\\u");
    for shift in [12u32, 8, 4, 0] {
        let digit = HEX.get(((v >> shift) & 0xf) as usize).copied().unwrap_or(b'0');
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn q(s: &str) -> String {
        let mut out = String::new();
        super::push_str(&mut out, s);
        out
    }

    #[test]
    fn escapes_what_json_needs_and_markup() {
        assert_eq!(q("plain"), "\"plain\"");
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(q("\n\r\t\u{1}\u{7f}"), "\"\\n\\r\\t\\u0001\\u007f\"");
        assert_eq!(q("</script>&"), "\"\\u003c/script\\u003e\\u0026\"");
        assert_eq!(q("\u{2028}\u{2029}é"), "\"\\u2028\\u2029é\"");
        // Whatever comes out parses back to what went in.
        for s in ["x", "\u{0}\u{1f}", "<a href='x'>&amp;</a>", "ünïcødé \u{1F600}"] {
            assert_eq!(serde_json::from_str::<String>(&q(s)).unwrap(), s);
        }
    }
}
