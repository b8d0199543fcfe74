//! An incremental JSON lexer with bounded state: bytes go in as they arrive (a whole request
//! body, or a response in chunks), events come out. It keeps no copy of the input: a few
//! bytes of the current key and scalar, a depth stack of 64 bits, and the position. Anything
//! that is not one well-formed JSON value (RFC 8259) ends it with an error, never a panic.
//!
//! Keys are decoded (escapes included) so `"max\u005ftokens"` is seen as `max_tokens`, the
//! way the backend's parser will see it.

/// How deep values may nest (each level is one bit of the stack).
pub const MAX_DEPTH: u32 = 64;
/// Bytes of a key or scalar kept for inspection; longer ones are marked as cut.
pub const TEXT: usize = 24;

/// The first bytes of a decoded key or scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    buf: [u8; TEXT],
    len: u8,
    /// Longer than [`TEXT`], or holding a character we do not decode (non-ASCII escape).
    cut: bool,
}

impl Text {
    const EMPTY: Text = Text { buf: [0; TEXT], len: 0, cut: false };

    fn push(&mut self, b: u8) {
        match self.buf.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.cut = true,
        }
    }

    /// The whole text, if it was kept whole.
    pub fn exact(&self) -> Option<&[u8]> {
        if self.cut {
            None
        } else {
            self.buf.get(..usize::from(self.len))
        }
    }

    pub fn is(&self, s: &[u8]) -> bool {
        self.exact() == Some(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Num,
    True,
    False,
    Null,
}

/// What the lexer saw. `depth` is the depth of the container the value sits in (0: the top
/// value); `key` is the member name when that container is an object. Offsets count every
/// byte fed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'k> {
    Open {
        depth: u32,
        key: Option<&'k Text>,
        object: bool,
        start: usize,
    },
    Scalar {
        depth: u32,
        key: Option<&'k Text>,
        kind: Kind,
        text: &'k Text,
        start: usize,
        end: usize,
    },
    /// A container closed; `depth` is its own depth (the one its members sit in), `end` the
    /// offset after its closing bracket.
    Close {
        depth: u32,
        end: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Value,
    /// After `[`: a value or `]`.
    FirstValue,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,` in an object.
    Key,
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    After,
    /// Inside a string; `key` says which kind.
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    Unicode {
        key: bool,
        digits: u8,
        value: u32,
    },
    Num,
    Literal {
        kind: Kind,
        at: u8,
    },
    /// The top value is complete: only whitespace may follow.
    Done,
    Failed,
}

#[derive(Debug)]
pub struct Lexer {
    state: State,
    depth: u32,
    /// Bit `d` set: the container at depth `d + 1` is an object.
    objects: u64,
    pos: usize,
    key: Text,
    has_key: bool,
    text: Text,
    start: usize,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new()
    }
}

const LITERALS: [(Kind, &[u8]); 3] = [(Kind::True, b"true"), (Kind::False, b"false"), (Kind::Null, b"null")];

fn literal(kind: Kind) -> &'static [u8] {
    LITERALS.iter().find(|(k, _)| *k == kind).map_or(b"", |(_, s)| s)
}

impl Lexer {
    pub fn new() -> Lexer {
        Lexer { state: State::Value, depth: 0, objects: 0, pos: 0, key: Text::EMPTY, has_key: false, text: Text::EMPTY, start: 0 }
    }

    /// One whole top-level value was read (and nothing but whitespace after it so far).
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes fed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1u64 << (self.depth - 1)) != 0
    }

    fn member_key(&self) -> Option<&Text> {
        (self.in_object() && self.has_key).then_some(&self.key)
    }

    /// Feeds `bytes`, calling `on` for each event. After an error every later call fails too.
    pub fn feed(&mut self, bytes: &[u8], on: &mut dyn FnMut(Event<'_>)) -> Result<(), Malformed> {
        for &b in bytes {
            self.byte(b, on)?;
            self.pos += 1;
        }
        Ok(())
    }

    /// The input ended: a number at the very end of the top value completes here.
    pub fn finish(&mut self, on: &mut dyn FnMut(Event<'_>)) -> Result<(), Malformed> {
        if self.state == State::Num && self.depth == 0 {
            if !valid_number(&self.text) {
                return self.fail();
            }
            self.end_scalar(Kind::Num, on);
        }
        if self.state == State::Done {
            Ok(())
        } else {
            self.state = State::Failed;
            Err(Malformed)
        }
    }

    fn fail(&mut self) -> Result<(), Malformed> {
        self.state = State::Failed;
        Err(Malformed)
    }

    fn end_scalar(&mut self, kind: Kind, on: &mut dyn FnMut(Event<'_>)) {
        let end = self.pos + usize::from(kind != Kind::Num);
        on(Event::Scalar { depth: self.depth, key: self.member_key(), kind, text: &self.text, start: self.start, end });
        self.has_key = false;
        self.state = if self.depth == 0 { State::Done } else { State::After };
    }

    fn byte(&mut self, b: u8, on: &mut dyn FnMut(Event<'_>)) -> Result<(), Malformed> {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            State::Failed => return Err(Malformed),
            State::Done => {
                if !ws {
                    return self.fail();
                }
            }
            State::FirstValue if b == b']' => return self.close(b, on),
            State::Value | State::FirstValue => {
                if ws {
                    return Ok(());
                }
                self.start = self.pos;
                self.text = Text::EMPTY;
                match b {
                    b'{' | b'[' => {
                        if self.depth >= MAX_DEPTH {
                            return self.fail();
                        }
                        let object = b == b'{';
                        on(Event::Open { depth: self.depth, key: self.member_key(), object, start: self.pos });
                        self.has_key = false;
                        if object {
                            self.objects |= 1u64 << self.depth;
                        } else {
                            self.objects &= !(1u64 << self.depth);
                        }
                        self.depth += 1;
                        self.state = if object { State::FirstKey } else { State::FirstValue };
                    }
                    b'"' => self.state = State::Str { key: false },
                    b'-' | b'0'..=b'9' => {
                        self.text.push(b);
                        self.state = State::Num;
                    }
                    b't' => self.state = State::Literal { kind: Kind::True, at: 1 },
                    b'f' => self.state = State::Literal { kind: Kind::False, at: 1 },
                    b'n' => self.state = State::Literal { kind: Kind::Null, at: 1 },
                    _ => return self.fail(),
                }
            }
            State::FirstKey | State::Key => {
                if ws {
                    return Ok(());
                }
                match b {
                    b'"' => {
                        self.key = Text::EMPTY;
                        self.state = State::Str { key: true };
                    }
                    b'}' if self.state == State::FirstKey => return self.close(b, on),
                    _ => return self.fail(),
                }
            }
            State::Colon => {
                if ws {
                    return Ok(());
                }
                if b != b':' {
                    return self.fail();
                }
                self.has_key = true;
                self.state = State::Value;
            }
            State::After => {
                if ws {
                    return Ok(());
                }
                match b {
                    b',' => self.state = if self.in_object() { State::Key } else { State::Value },
                    b'}' | b']' => return self.close(b, on),
                    _ => return self.fail(),
                }
            }
            State::Str { key } => match b {
                b'"' => {
                    if key {
                        self.state = State::Colon;
                    } else {
                        self.end_scalar(Kind::Str, on);
                    }
                }
                b'\\' => self.state = State::Escape { key },
                0..=0x1f => return self.fail(),
                _ => self.push(key, b),
            },
            State::Escape { key } => {
                let decoded = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.state = State::Unicode { key, digits: 0, value: 0 };
                        return Ok(());
                    }
                    _ => return self.fail(),
                };
                self.push(key, decoded);
                self.state = State::Str { key };
            }
            State::Unicode { key, digits, value } => {
                let Some(d) = char::from(b).to_digit(16) else { return self.fail() };
                let value = value * 16 + d;
                if digits < 3 {
                    self.state = State::Unicode { key, digits: digits + 1, value };
                } else {
                    // ASCII is kept; anything else cannot be part of a name we look for.
                    match u8::try_from(value) {
                        Ok(a) if a < 0x80 => self.push(key, a),
                        _ => self.cut(key),
                    }
                    self.state = State::Str { key };
                }
            }
            State::Num => match b {
                b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' => self.text.push(b),
                _ => {
                    if !valid_number(&self.text) {
                        return self.fail();
                    }
                    self.end_scalar(Kind::Num, on);
                    // The byte that ended the number belongs to what follows.
                    return self.byte(b, on);
                }
            },
            State::Literal { kind, at } => {
                let word = literal(kind);
                if word.get(usize::from(at)) != Some(&b) {
                    return self.fail();
                }
                if usize::from(at) + 1 == word.len() {
                    self.end_scalar(kind, on);
                } else {
                    self.state = State::Literal { kind, at: at + 1 };
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, key: bool, b: u8) {
        if key {
            self.key.push(b);
        } else {
            self.text.push(b);
        }
    }

    fn cut(&mut self, key: bool) {
        if key {
            self.key.cut = true;
        } else {
            self.text.cut = true;
        }
    }

    fn close(&mut self, b: u8, on: &mut dyn FnMut(Event<'_>)) -> Result<(), Malformed> {
        let object = self.in_object();
        if self.depth == 0 || object != (b == b'}') {
            return self.fail();
        }
        on(Event::Close { depth: self.depth, end: self.pos + 1 });
        self.depth -= 1;
        self.has_key = false;
        self.state = if self.depth == 0 { State::Done } else { State::After };
        Ok(())
    }
}

/// RFC 8259's number grammar over the kept text (a number longer than [`TEXT`] is checked as
/// far as it was kept: its characters were all number characters).
fn valid_number(t: &Text) -> bool {
    let s = t.buf.get(..usize::from(t.len)).unwrap_or_default();
    let mut i = 0;
    let at = |i: usize| s.get(i).copied();
    let digits = |i: &mut usize| {
        let from = *i;
        while at(*i).is_some_and(|c| c.is_ascii_digit()) {
            *i += 1;
        }
        *i > from
    };
    if at(i) == Some(b'-') {
        i += 1;
    }
    match at(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return t.cut && i == s.len(),
    }
    if at(i) == Some(b'.') {
        i += 1;
        if !digits(&mut i) {
            return t.cut && i == s.len();
        }
    }
    if matches!(at(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(at(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return t.cut && i == s.len();
        }
    }
    i == s.len()
}

/// A non-negative integer scalar (`Kind::Num` without sign, fraction or exponent), if it
/// fits in a u64.
pub fn integer(kind: Kind, t: &Text) -> Option<u64> {
    if kind != Kind::Num {
        return None;
    }
    let s = t.exact()?;
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}
