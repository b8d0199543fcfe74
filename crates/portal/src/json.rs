//! A small JSON writer for what the portal generates (catalog, OpenAPI, usage): no `Value`
//! tree, no serializer code in the `.wasm`. Every string goes through [`Json::str`], which
//! also escapes `<`, `>`, `&` and the two JavaScript line separators, so a name an operator
//! wrote can never end a `<script>` block or be sniffed as markup, wherever the JSON lands.

pub(crate) struct Json {
    out: String,
    /// A value was written at this level: the next one needs a comma.
    comma: bool,
}

impl Json {
    pub(crate) fn new() -> Json {
        Json { out: String::with_capacity(4096), comma: false }
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }

    fn sep(&mut self) {
        if self.comma {
            self.out.push(',');
        }
    }

    pub(crate) fn obj(&mut self) -> &mut Json {
        self.sep();
        self.out.push('{');
        self.comma = false;
        self
    }

    pub(crate) fn end_obj(&mut self) -> &mut Json {
        self.out.push('}');
        self.comma = true;
        self
    }

    pub(crate) fn arr(&mut self) -> &mut Json {
        self.sep();
        self.out.push('[');
        self.comma = false;
        self
    }

    pub(crate) fn end_arr(&mut self) -> &mut Json {
        self.out.push(']');
        self.comma = true;
        self
    }

    /// An object key; the next call writes its value.
    pub(crate) fn key(&mut self, k: &str) -> &mut Json {
        self.sep();
        mlgate_core::json::push_str(&mut self.out, k);
        self.out.push(':');
        self.comma = false;
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Json {
        self.sep();
        mlgate_core::json::push_str(&mut self.out, v);
        self.comma = true;
        self
    }

    pub(crate) fn num(&mut self, v: u64) -> &mut Json {
        self.sep();
        self.out.push_str(&v.to_string());
        self.comma = true;
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Json {
        self.sep();
        self.out.push_str(if v { "true" } else { "false" });
        self.comma = true;
        self
    }

    pub(crate) fn null(&mut self) -> &mut Json {
        self.sep();
        self.out.push_str("null");
        self.comma = true;
        self
    }

    /// A value that is already JSON (a constant written in this crate, never input).
    pub(crate) fn raw(&mut self, json: &str) -> &mut Json {
        self.sep();
        self.out.push_str(json);
        self.comma = true;
        self
    }

    pub(crate) fn kv_str(&mut self, k: &str, v: &str) -> &mut Json {
        self.key(k).str(v)
    }

    pub(crate) fn kv_num(&mut self, k: &str, v: u64) -> &mut Json {
        self.key(k).num(v)
    }

    pub(crate) fn kv_opt_num(&mut self, k: &str, v: Option<u64>) -> &mut Json {
        match v {
            Some(n) => self.key(k).num(n),
            None => self.key(k).null(),
        }
    }
}

/// `s` escaped for HTML text and attribute values (double- or single-quoted).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
