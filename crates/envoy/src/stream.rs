//! One HTTP stream's accounting, from the request headers to the end of the stream, as both
//! hosts keep it: which usage slot the call counts in, its status and body bytes, when the
//! backend answered, the response headers to add, and the body bytes owed to a bandwidth quota.
//! Times are nanoseconds of the host's monotonic clock; the host reads it, this only subtracts.

use mlgate_core::admit::condition::Conditional;
use mlgate_core::admit::tokens::Metered;
use mlgate_core::admit::Forward;
use mlgate_core::model::Gateway;
use mlgate_core::reply::Reply;
use mlgate_core::tokens::{Meter, TokenUsage};
use mlgate_core::usage::Call;

/// A judged call, measured for the usage metrics until the stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub slot: u32,
    pub start_ns: u64,
    /// When the backend's response headers arrived (forwarded calls).
    pub response_ns: Option<u64>,
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Sent upstream: the status and response bytes come from the response; otherwise they
    /// are mlgate's own reply's.
    pub upstream: bool,
}

/// What a stream owes when it ends: the finished call for the usage metrics, and body bytes
/// for a subscription's bandwidth quota.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ended {
    pub call: Option<Call>,
    /// (subscription index, body bytes), only when bytes were counted.
    pub bandwidth: Option<(u32, u64)>,
    /// A call that carries tokens: what to settle, and the usage its backend reported.
    pub tokens: Option<(Metered, Option<TokenUsage>)>,
    /// A call that ended without response headers while it held conditional admissions: they
    /// are settled as status 0.
    pub conditional: Option<Conditional>,
}

/// What an admitted call leaves in the stream's accounting, owned (a host may take it while
/// the request's buffers are borrowed and apply it once the rewrite went through).
#[derive(Debug, Default)]
pub struct Forwarded {
    pub response_headers: Vec<(String, String)>,
    pub bandwidth_of: Option<u32>,
    pub metered: Option<Metered>,
    pub conditional: Option<Conditional>,
}

impl Forwarded {
    pub fn of(gw: &Gateway, fwd: &Forward<'_, '_>) -> Forwarded {
        Forwarded {
            response_headers: fwd.response_headers(gw),
            bandwidth_of: fwd.grant.count_bandwidth.then_some(fwd.identity.sub_index),
            metered: fwd.tokens.as_ref().map(|t| t.metered),
            conditional: Conditional::of(fwd),
        }
    }
}

/// The response of a call that carries tokens, read for its usage as it passes.
#[derive(Debug)]
pub struct Metering {
    pub metered: Metered,
    /// Set when the response headers arrive (its kind depends on the content type).
    pub meter: Option<Meter>,
    /// The response is held whole until it ends, to add `tokens_consumed_header`.
    pub hold: bool,
}

/// The accounting of one stream.
#[derive(Debug, Default)]
pub struct Accounting {
    pub measure: Option<Measure>,
    /// Set for an admitted request whose body bytes count against a bandwidth quota.
    pub bandwidth_of: Option<u32>,
    pub body_bytes: u64,
    /// Added to the response when its headers pass (the limits' headers).
    pub response_headers: Vec<(String, String)>,
    /// A call that carries tokens.
    pub tokens: Option<Metering>,
    /// Admissions held until the response status is known (`increment_condition`).
    pub conditional: Option<Conditional>,
}

impl Accounting {
    /// The call was judged: it counts in usage slot `slot` (none for a pass-through).
    pub fn judged(&mut self, slot: Option<u32>, start_ns: u64) {
        self.measure =
            slot.map(|slot| Measure { slot, start_ns, response_ns: None, status: 0, request_bytes: 0, response_bytes: 0, upstream: false });
    }

    /// mlgate answered itself: a measured call takes its status and body size from the reply.
    pub fn replied(&mut self, r: &Reply) {
        if let Some(m) = self.measure.as_mut() {
            m.status = r.status;
            m.response_bytes = r.body.len() as u64;
        }
    }

    /// The call went upstream: its response is the backend's, with the limits' headers added.
    pub fn went_upstream(&mut self, up: Forwarded) {
        if let Some(m) = self.measure.as_mut() {
            m.upstream = true;
        }
        self.response_headers = up.response_headers;
        self.bandwidth_of = up.bandwidth_of;
        self.tokens = up.metered.map(|metered| Metering { metered, meter: None, hold: false });
        self.conditional = up.conditional;
    }

    /// Whether the response must be read for its token usage.
    pub fn metering(&self) -> bool {
        self.tokens.is_some()
    }

    /// The response headers of a metered call: `content_type` picks how its usage is read.
    /// Returns whether the host must hold the response until it ends (a JSON response whose
    /// limits name a `tokens_consumed_header`: the header is added once the usage is known).
    pub fn meter_response(&mut self, gw: &Gateway, content_type: Option<&[u8]>) -> bool {
        let Some(t) = self.tokens.as_mut() else { return false };
        let sse = content_type.is_some_and(|c| c.len() >= 17 && c.get(..17).is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream")));
        t.meter = Some(Meter::new(sse));
        t.hold = !sse && mlgate_core::admit::tokens::says_consumed(gw, &t.metered);
        t.hold
    }

    /// A piece of a metered call's response body passed.
    pub fn response_chunk(&mut self, bytes: &[u8]) {
        if let Some(m) = self.tokens.as_mut().and_then(|t| t.meter.as_mut()) {
            m.feed(bytes);
        }
    }

    /// A held response ended: the headers that say what it consumed.
    pub fn consumed_headers(&self, gw: &Gateway) -> Vec<(String, String)> {
        match self.tokens.as_ref().and_then(|t| Some((t.metered, t.meter.as_ref()?.usage()?))) {
            Some((m, usage)) => mlgate_core::admit::tokens::consumed_headers(gw, &m, usage),
            None => Vec::new(),
        }
    }

    /// Whether body bytes in this direction count anywhere (a host may skip asking their size).
    /// A reply of mlgate's own was counted whole when it was sent.
    pub fn counts_body(&self, response: bool) -> bool {
        self.bandwidth_of.is_some() || self.measure.as_ref().is_some_and(|m| !response || m.upstream)
    }

    /// `n` body bytes passed in one direction.
    pub fn body(&mut self, n: u64, response: bool) {
        if self.bandwidth_of.is_some() {
            self.body_bytes = self.body_bytes.saturating_add(n);
        }
        if let Some(m) = self.measure.as_mut() {
            if !response {
                m.request_bytes = m.request_bytes.saturating_add(n);
            } else if m.upstream {
                m.response_bytes = m.response_bytes.saturating_add(n);
            }
        }
    }

    /// Whether a measured call went upstream, or a call holds conditional admissions: only then
    /// does its response (status, clock) count, so a host reads them only then.
    pub fn upstream(&self) -> bool {
        self.conditional.is_some() || self.measure.as_ref().is_some_and(|m| m.upstream)
    }

    /// With the response's `:status`: the held admissions to settle, once (a host hands them to
    /// [`mlgate_core::admit::condition::settle_status`] with its store).
    pub fn status_known(&mut self, status: Option<&[u8]>) -> Option<(Conditional, u16)> {
        let c = self.conditional.take()?;
        Some((c, status.and_then(parse_status).unwrap_or(0)))
    }

    /// The response headers arrived at `now_ns` with `:status` (raw bytes). For a forwarded call
    /// the backend answered (or Envoy did for it): serviceTime ends, the status is set. Returns
    /// the headers to add to the response.
    pub fn response_started(&mut self, now_ns: u64, status: Option<&[u8]>) -> Vec<(String, String)> {
        if let Some(m) = self.measure.as_mut().filter(|m| m.upstream) {
            m.response_ns = Some(now_ns);
            m.status = status.and_then(parse_status).unwrap_or(0);
        }
        std::mem::take(&mut self.response_headers)
    }

    /// The stream ended at `now_ns`: what is left to record (each at most once).
    pub fn end(&mut self, now_ns: u64) -> Ended {
        let tokens = self.tokens.take().map(|t| (t.metered, t.meter.and_then(|m| m.usage())));
        let usage = tokens.and_then(|t| t.1).unwrap_or_default();
        let call = self.measure.take().map(|m| Call {
            slot: m.slot,
            status: m.status,
            request_bytes: m.request_bytes,
            response_bytes: m.response_bytes,
            api_time_us: now_ns.saturating_sub(m.start_ns) / 1000,
            service_time_us: m.response_ns.map(|t| t.saturating_sub(m.start_ns) / 1000),
            prompt_tokens: usage.prompt,
            completion_tokens: usage.completion,
        });
        let bandwidth = self.bandwidth_of.take().filter(|_| self.body_bytes > 0).map(|sub| (sub, self.body_bytes));
        Ended { call, bandwidth, tokens, conditional: self.conditional.take() }
    }
}

/// A response's `:status` (three ASCII digits).
pub fn parse_status(v: &[u8]) -> Option<u16> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Header pairs as bytes, borrowed from a reply.
pub type HeaderPairs<'r> = Vec<(&'r [u8], &'r [u8])>;

/// A local reply as headers and body bytes: `content-type` first, then the reply's headers, and
/// the gzip body with `content-encoding` when the reply has one.
pub fn reply_parts(r: &Reply) -> (HeaderPairs<'_>, &[u8]) {
    let mut headers: HeaderPairs<'_> = Vec::with_capacity(r.headers.len() + 2);
    headers.push((b"content-type", r.content_type.as_bytes()));
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    match r.gzip_body {
        Some(gz) => {
            headers.push((b"content-encoding", b"gzip"));
            (headers, gz)
        }
        None => (headers, r.body.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_forwarded_call_is_measured_from_the_backend() {
        let mut a = Accounting::default();
        a.judged(Some(7), 1_000_000);
        a.measure.as_mut().unwrap().upstream = true;
        a.bandwidth_of = Some(3);
        assert!(a.counts_body(false) && a.counts_body(true));
        a.body(10, false);
        a.body(5, true);
        assert!(a.response_started(4_000_000, Some(b"201")).is_empty());
        a.body(7, true);
        let e = a.end(9_000_000);
        let call = e.call.unwrap();
        assert_eq!((call.slot, call.status, call.request_bytes, call.response_bytes), (7, 201, 10, 12));
        assert_eq!((call.api_time_us, call.service_time_us), (8_000, Some(3_000)));
        assert_eq!(e.bandwidth, Some((3, 22)));
        // Nothing is recorded twice.
        assert_eq!(a.end(10_000_000), Ended::default());
    }

    #[test]
    fn an_own_reply_counts_whole_and_once() {
        let mut a = Accounting::default();
        a.judged(Some(1), 0);
        a.replied(&Reply::json(429, "x"));
        assert!(a.counts_body(false) && !a.counts_body(true));
        a.body(100, true);
        let _ = a.response_started(5, Some(b"200"));
        let call = a.end(2_000).call.unwrap();
        assert_eq!(call.status, 429);
        assert_eq!(call.response_bytes, Reply::json(429, "x").body.len() as u64);
        assert_eq!(call.service_time_us, None);
    }

    #[test]
    fn held_admissions_are_settled_once_by_status_or_at_the_end() {
        use mlgate_core::limits::{Held, HeldAt};
        let mut held = Held::default();
        held.at[0] = Some(HeldAt { mark: 5, slot: 0 });
        let c = Conditional { sub: 1, api: 0, op: 2, held };
        let mut a = Accounting::default();
        a.went_upstream(Forwarded { conditional: Some(c), ..Forwarded::default() });
        assert!(a.upstream(), "the status of a call that holds admissions is read");
        assert_eq!(a.status_known(Some(b"503")), Some((c, 503)));
        assert_eq!(a.status_known(Some(b"200")), None);
        assert_eq!(a.end(1).conditional, None);
        // No response at all: the end settles it.
        let mut b = Accounting::default();
        b.went_upstream(Forwarded { conditional: Some(c), ..Forwarded::default() });
        assert_eq!(b.end(1).conditional, Some(c));
        let mut z = Accounting::default();
        z.went_upstream(Forwarded { conditional: Some(c), ..Forwarded::default() });
        assert_eq!(z.status_known(Some(b"x")), Some((c, 0)));
    }

    #[test]
    fn a_pass_through_is_not_measured_and_bad_statuses_are_zero() {
        let mut a = Accounting::default();
        a.judged(None, 0);
        assert!(!a.counts_body(false));
        assert_eq!(a.end(1), Ended::default());
        assert_eq!(parse_status(b"2x0"), None);
        assert_eq!(parse_status(b"\xff"), None);
        assert_eq!(parse_status(b"503"), Some(503));
    }

    #[test]
    fn reply_parts_put_the_content_type_first() {
        let r = Reply::json(404, "nope").with_header("x-a", "1".into());
        let (h, body) = reply_parts(&r);
        assert_eq!(h.first().unwrap().0, b"content-type");
        assert_eq!(h.get(1).unwrap(), &(&b"x-a"[..], &b"1"[..]));
        assert_eq!(body, r.body.as_bytes());
    }
}
