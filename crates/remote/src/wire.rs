//! The protobuf wire format of the two RLS v3 messages the filter exchanges, by hand
//! (`envoy-types` does not build for wasm32, and prost would cost Wasm size for two
//! messages): encoding `RateLimitRequest`, decoding `RateLimitResponse`. The decoder reads
//! hostile bytes: every length is bounds-checked, unknown fields are skipped, and anything
//! malformed is an error, never a panic. mlgate-rls's tests check both against prost.
//!
//! ```text
//! RateLimitRequest    { 1: domain string, 2: descriptors repeated RateLimitDescriptor, 3: hits_addend uint32 }
//! RateLimitDescriptor { 1: entries repeated Entry { 1: key string, 2: value string },
//!                       3: hits_addend google.protobuf.UInt64Value { 1: value uint64 } }
//! RateLimitResponse   { 1: overall_code Code, 2: statuses repeated DescriptorStatus, ... }
//! DescriptorStatus    { 1: code Code, 2: current_limit RateLimit { 1: requests_per_unit uint32, 2: unit, 3: name string },
//!                       3: limit_remaining uint32, 4: duration_until_reset google.protobuf.Duration { 1: seconds int64, 2: nanos int32 } }
//! Code: UNKNOWN 0, OK 1, OVER_LIMIT 2
//! ```

/// `RateLimitResponse.Code`.
pub const CODE_UNKNOWN: u32 = 0;
pub const CODE_OK: u32 = 1;
pub const CODE_OVER_LIMIT: u32 = 2;

/// `RateLimitResponse.RateLimit.Unit`.
pub const UNIT_UNKNOWN: u32 = 0;
pub const UNIT_SECOND: u32 = 1;
pub const UNIT_MINUTE: u32 = 2;
pub const UNIT_HOUR: u32 = 3;
pub const UNIT_DAY: u32 = 4;
pub const UNIT_WEEK: u32 = 7;

/// Statuses decoded at most (mlgate sends at most 4 descriptors).
const MAX_STATUSES: usize = 64;

/// One descriptor: its entries (key, value), and an optional per-descriptor `hits_addend`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    pub hits_addend: Option<u64>,
}

/// `RateLimitResponse.RateLimit`: the limit a status is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentLimit {
    pub name: String,
    pub requests_per_unit: u32,
    pub unit: u32,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub code: u32,
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    /// `duration_until_reset`, in milliseconds (`None` if absent).
    pub reset_ms: Option<u64>,
}

/// The fields of `RateLimitResponse` mlgate reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub overall_code: u32,
    pub statuses: Vec<Status>,
}

/// The response could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes a `RateLimitRequest`.
pub fn encode_request(domain: &str, descriptors: &[Descriptor], hits_addend: u32) -> Vec<u8> {
    let mut e = RequestEncoder::new(domain);
    for d in descriptors {
        let entries: Vec<(&str, &str)> = d.entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        e.descriptor(&entries, d.hits_addend);
    }
    e.finish(hits_addend)
}

/// Writes a `RateLimitRequest` descriptor by descriptor, without building them first.
pub struct RequestEncoder {
    out: Vec<u8>,
    d: Vec<u8>,
    e: Vec<u8>,
}

impl RequestEncoder {
    pub fn new(domain: &str) -> Self {
        let mut out = Vec::with_capacity(256);
        if !domain.is_empty() {
            bytes_field(&mut out, 1, domain.as_bytes());
        }
        RequestEncoder { out, d: Vec::with_capacity(128), e: Vec::with_capacity(64) }
    }

    pub fn descriptor(&mut self, entries: &[(&str, &str)], hits_addend: Option<u64>) {
        self.d.clear();
        for (k, v) in entries {
            self.e.clear();
            if !k.is_empty() {
                bytes_field(&mut self.e, 1, k.as_bytes());
            }
            if !v.is_empty() {
                bytes_field(&mut self.e, 2, v.as_bytes());
            }
            bytes_field(&mut self.d, 1, &self.e);
        }
        if let Some(h) = hits_addend {
            self.e.clear();
            if h != 0 {
                tag(&mut self.e, 1, 0);
                varint(&mut self.e, h);
            }
            bytes_field(&mut self.d, 3, &self.e);
        }
        bytes_field(&mut self.out, 2, &self.d);
    }

    pub fn finish(mut self, hits_addend: u32) -> Vec<u8> {
        if hits_addend != 0 {
            tag(&mut self.out, 3, 0);
            varint(&mut self.out, u64::from(hits_addend));
        }
        self.out
    }
}

/// A bounds-checked protobuf reader.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at).ok_or(Malformed)?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Malformed)
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed)?;
        let s = self.b.get(self.at..end).ok_or(Malformed)?;
        self.at = end;
        Ok(s)
    }

    /// The next field, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, Malformed> {
        if self.at >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(Malformed);
        }
        let v = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Value::Bytes(self.skip(n)?)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed
            }
            _ => return Err(Malformed),
        };
        Ok(Some((field, v)))
    }
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Decodes a `RateLimitResponse` (the fields mlgate reads; the rest is skipped).
pub fn decode_response(b: &[u8]) -> Result<Response, Malformed> {
    let mut r = Reader::new(b);
    let mut resp = Response::default();
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Varint(c)) => resp.overall_code = u32_of(c),
            (2, Value::Bytes(s)) => {
                if resp.statuses.len() >= MAX_STATUSES {
                    return Err(Malformed);
                }
                resp.statuses.push(decode_status(s)?);
            }
            (1 | 2, _) => return Err(Malformed),
            _ => {}
        }
    }
    Ok(resp)
}

fn decode_status(b: &[u8]) -> Result<Status, Malformed> {
    let mut r = Reader::new(b);
    let mut s = Status::default();
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Varint(c)) => s.code = u32_of(c),
            (2, Value::Bytes(m)) => s.current_limit = Some(decode_limit(m)?),
            (3, Value::Varint(n)) => s.limit_remaining = u32_of(n),
            (4, Value::Bytes(m)) => s.reset_ms = Some(decode_duration_ms(m)?),
            (1..=4, _) => return Err(Malformed),
            _ => {}
        }
    }
    Ok(s)
}

fn decode_limit(b: &[u8]) -> Result<CurrentLimit, Malformed> {
    let mut r = Reader::new(b);
    let mut l = CurrentLimit::default();
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Varint(n)) => l.requests_per_unit = u32_of(n),
            (2, Value::Varint(u)) => l.unit = u32_of(u),
            // Names are informational except mlgate's quota markers; invalid UTF-8 is dropped.
            (3, Value::Bytes(s)) => l.name = String::from_utf8(s.to_vec()).unwrap_or_default(),
            (1..=3, _) => return Err(Malformed),
            _ => {}
        }
    }
    Ok(l)
}

/// A `google.protobuf.Duration` in milliseconds, rounded up; negative is 0.
fn decode_duration_ms(b: &[u8]) -> Result<u64, Malformed> {
    let mut r = Reader::new(b);
    let (mut secs, mut nanos) = (0i64, 0i64);
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            // int64 / int32 are two's complement varints.
            (1, Value::Varint(s)) => secs = s as i64,
            (2, Value::Varint(n)) => nanos = i64::from(n as i32),
            (1 | 2, _) => return Err(Malformed),
            _ => {}
        }
    }
    let secs = u64::try_from(secs).unwrap_or(0);
    let nanos = u64::try_from(nanos).unwrap_or(0).min(999_999_999);
    Ok(secs.saturating_mul(1000).saturating_add(nanos.div_ceil(1_000_000)))
}

/// `envoy.config.core.v3.GrpcService { envoy_grpc: { cluster_name } }`: what
/// `proxy_grpc_call` is given, so no cluster name is ever mistaken for a serialized proto.
pub fn grpc_service(cluster: &str) -> Vec<u8> {
    let mut inner = Vec::with_capacity(cluster.len() + 4);
    bytes_field(&mut inner, 1, cluster.as_bytes());
    let mut out = Vec::with_capacity(inner.len() + 4);
    bytes_field(&mut out, 1, &inner);
    out
}

/// A gRPC message for tests and for mlgate-rls's cross-checks: encodes a response.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    if resp.overall_code != 0 {
        tag(&mut out, 1, 0);
        varint(&mut out, u64::from(resp.overall_code));
    }
    for s in &resp.statuses {
        let mut m = Vec::new();
        if s.code != 0 {
            tag(&mut m, 1, 0);
            varint(&mut m, u64::from(s.code));
        }
        if let Some(l) = &s.current_limit {
            let mut lm = Vec::new();
            if l.requests_per_unit != 0 {
                tag(&mut lm, 1, 0);
                varint(&mut lm, u64::from(l.requests_per_unit));
            }
            if l.unit != 0 {
                tag(&mut lm, 2, 0);
                varint(&mut lm, u64::from(l.unit));
            }
            if !l.name.is_empty() {
                bytes_field(&mut lm, 3, l.name.as_bytes());
            }
            bytes_field(&mut m, 2, &lm);
        }
        if s.limit_remaining != 0 {
            tag(&mut m, 3, 0);
            varint(&mut m, u64::from(s.limit_remaining));
        }
        if let Some(ms) = s.reset_ms {
            let mut dm = Vec::new();
            if ms / 1000 != 0 {
                tag(&mut dm, 1, 0);
                varint(&mut dm, ms / 1000);
            }
            if ms % 1000 != 0 {
                tag(&mut dm, 2, 0);
                varint(&mut dm, (ms % 1000) * 1_000_000);
            }
            bytes_field(&mut m, 4, &dm);
        }
        bytes_field(&mut out, 2, &m);
    }
    out
}

/// Decodes a `RateLimitRequest` into (domain, descriptors, hits_addend): the service side of
/// [`encode_request`], for tests and for services without prost. Strings must be UTF-8.
pub fn decode_request(b: &[u8]) -> Result<(String, Vec<Descriptor>, u32), Malformed> {
    let utf8 = |s: &[u8]| String::from_utf8(s.to_vec()).map_err(|_| Malformed);
    let mut r = Reader::new(b);
    let (mut domain, mut descriptors, mut hits) = (String::new(), Vec::new(), 0u32);
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Bytes(s)) => domain = utf8(s)?,
            (2, Value::Bytes(s)) => {
                let mut d = Descriptor::default();
                let mut dr = Reader::new(s);
                while let Some((f, v)) = dr.field()? {
                    match (f, v) {
                        (1, Value::Bytes(e)) => {
                            let (mut k, mut val) = (String::new(), String::new());
                            let mut er = Reader::new(e);
                            while let Some((ef, ev)) = er.field()? {
                                match (ef, ev) {
                                    (1, Value::Bytes(x)) => k = utf8(x)?,
                                    (2, Value::Bytes(x)) => val = utf8(x)?,
                                    (1 | 2, _) => return Err(Malformed),
                                    _ => {}
                                }
                            }
                            d.entries.push((k, val));
                        }
                        (3, Value::Bytes(h)) => {
                            let mut hr = Reader::new(h);
                            let mut n = 0;
                            while let Some((hf, hv)) = hr.field()? {
                                if let (1, Value::Varint(x)) = (hf, hv) {
                                    n = x;
                                }
                            }
                            d.hits_addend = Some(n);
                        }
                        (1 | 3, _) => return Err(Malformed),
                        _ => {}
                    }
                }
                descriptors.push(d);
            }
            (3, Value::Varint(h)) => hits = u32_of(h),
            (1..=3, _) => return Err(Malformed),
            _ => {}
        }
    }
    Ok((domain, descriptors, hits))
}
