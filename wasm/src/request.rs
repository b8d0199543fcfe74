//! `proxy_on_request_headers`: the request as bytes, local endpoints first, then `admit`, and
//! the `Outcome` applied (a reply, a pass-through, or the rewrite in one host call). Also the
//! second pass of a request paused for a remote store's answer (`rls`).

use super::abi::{self, CONTINUE, PAUSE};
use super::metrics::Usage;
use super::store::SharedData;
use super::streams::{with_stream, Stream};
use super::{profile, rls};
use mlgate_core::local::LocalHost;
use mlgate_core::reply::{self, Reply};
use mlgate_core::{export, Admission, Connection, Edit, Outcome, Request, Store};
use mlgate_envoy::local;
use mlgate_envoy::stream::{reply_parts, Forwarded};

/// The downstream connection, asked lazily.
struct Downstream;

impl Connection for Downstream {
    fn address(&mut self) -> Option<Vec<u8>> {
        // `source.address` is `ip:port` or `[v6]:port`, as Envoy established it (with
        // `use_remote_address`, not from X-Forwarded-For).
        abi::property(b"source\0address").map(mlgate_core::address_without_port)
    }

    fn is_tls(&mut self) -> bool {
        abi::property(b"connection\0tls_version").is_some_and(|v| !v.is_empty())
    }
}

/// What local endpoints (portal, admin) read from the host: shared data, which they only
/// read, and metrics. Before the first read, this worker's usage batches are written, so a
/// report it serves has every call it counted (other workers' at most a tick late).
struct LocalAbi<'u> {
    store: SharedData,
    usage: Option<&'u Usage>,
    flushed: bool,
}

impl LocalAbi<'_> {
    fn flush_once(&mut self) {
        if !self.flushed {
            self.flushed = true;
            super::metrics::flush_all();
        }
    }
}

impl LocalHost for LocalAbi<'_> {
    fn store(&mut self) -> &mut dyn Store {
        self.flush_once();
        &mut self.store
    }

    fn metric(&mut self, slot: u32, index: usize) -> Option<u64> {
        self.flush_once();
        abi::get_metric(self.usage?.id(slot, index)?)
    }
}

fn send_reply(r: &Reply) {
    let (headers, body) = reply_parts(r);
    abi::send_local_response(r.status, &headers, body);
}

/// Sends mlgate's own reply; a measured call takes its status and body size from it.
fn reply(st: &mut Stream, r: &Reply) {
    send_reply(r);
    st.acct.replied(r);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::RequestHeaders);
    with_stream(id, |st| {
        let Some(buf) = abi::header_map(abi::REQUEST_HEADERS) else {
            send_reply(&reply::internal_error());
            return PAUSE;
        };
        // No body will come: a call that carries tokens is judged with an empty one at once.
        let body: Option<&[u8]> = if end_of_stream { Some(&[]) } else { None };
        match judge(id, st, &buf, body, false) {
            Verdict::ReadBody => {
                // The rewritten headers went on; the body is held until it is whole, then the
                // call is judged again with it (and these headers: Envoy no longer has them).
                st.reading_body = true;
                st.held_headers = Some(buf);
                CONTINUE
            }
            v => v.code(),
        }
    })
    .unwrap_or(CONTINUE)
}

/// What the request path tells the host to do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Continue,
    /// Stopped: a reply went out, or the request waits (for a remote store).
    Pause,
    /// The headers went on rewritten; judge the call again once its body is whole.
    ReadBody,
}

impl Verdict {
    pub(crate) fn code(self) -> u32 {
        if self == Verdict::Continue {
            CONTINUE
        } else {
            PAUSE
        }
    }
}

/// The second judgement of a call that carries tokens, with its whole body.
pub(crate) fn judge_body(id: u32, st: &mut Stream, body: &[u8]) -> Verdict {
    let Some(buf) = st.held_headers.take() else {
        reply(st, &reply::internal_error());
        return Verdict::Pause;
    };
    let verdict = judge(id, st, &buf, Some(body), true);
    if rls::waiting(id) {
        // Judged again with these headers and the held body when the remote store answers.
        st.held_headers = Some(buf);
    }
    verdict
}

/// The request judged from its header map `buf` (and its body, once read). `headers_sent`: the
/// rewritten headers already went on (the body phase of a call that carries tokens).
fn judge(id: u32, st: &mut Stream, buf: &[u8], body: Option<&[u8]>, headers_sent: bool) -> Verdict {
    let Some(gw) = st.gateway.clone() else {
        send_reply(&reply::internal_error());
        return Verdict::Pause;
    };
    let Some(headers) = abi::parse_header_map(buf) else {
        reply(st, &reply::internal_error());
        return Verdict::Pause;
    };
    let mut req = Request::from_headers(&headers);
    req.body = body;
    #[cfg(feature = "fault-injection")]
    if req.header(b"x-mlgate-fault") == Some(b"trap") {
        // Test builds only: a Wasm runtime error, to exercise Envoy's failure_policy.
        core::arch::wasm32::unreachable();
    }
    // One clock reading: the decision's time and the start of the call's apiTime.
    let now_ns = abi::now_ns();
    let now_ms = now_ns / 1_000_000;
    let start_ns = *st.started_ns.get_or_insert(now_ns);
    // Local endpoints (portal, admin) answer here: never forwarded, never counted. Without
    // any in the configuration this is the one check the request pays.
    if local::any(&gw) {
        if let Some(r) = local::serve(&gw, &req, now_ms, &mut LocalAbi { store: SharedData, usage: st.usage.as_deref(), flushed: false }) {
            send_reply(&r);
            return Verdict::Pause;
        }
    }
    let Some(Admission { outcome, events }) = rls::admit(id, &gw, &req, now_ms, &mut Downstream, &mut SharedData) else {
        // Asked a remote store: paused until its answer (or the timeout) comes.
        return Verdict::Pause;
    };
    if let Some(s) = &st.stats {
        s.count(&events);
    }
    st.acct.judged(events.usage, start_ns);
    match outcome {
        Outcome::Reply(r) => {
            // The access log's record of a refusal: what it was matched to.
            for (name, value) in export::refused(&gw, &events.matched, gw.settings.export_metadata) {
                abi::set_property(name, value.as_bytes());
            }
            reply(st, &r);
            Verdict::Pause
        }
        Outcome::PassThrough { strip } => {
            // Never forward a client's copy of the identity headers: a failed removal is a 500.
            if !strip.iter().flatten().all(|name| abi::remove_header(abi::REQUEST_HEADERS, name.as_bytes())) {
                reply(st, &reply::internal_error());
                return Verdict::Pause;
            }
            Verdict::Continue
        }
        Outcome::ReadBody(fwd) => {
            if !write_upstream(&gw, &fwd, &req) {
                reply(st, &reply::internal_error());
                return Verdict::Pause;
            }
            Verdict::ReadBody
        }
        Outcome::Forward(fwd) => {
            let new_body = fwd.tokens.as_ref().and_then(|t| t.body.as_deref());
            let body_ok = match (new_body, body) {
                (Some(b), Some(old)) => abi::set_buffer(abi::REQUEST_BODY, old.len(), b),
                _ => true,
            };
            // Bench builds with `ablate-header-write` skip the write (and send the request unrewritten).
            let write = !headers_sent && !cfg!(feature = "ablate-header-write");
            if !body_ok || (write && !write_upstream(&gw, &fwd, &req)) {
                // Never forward a request whose key and credentials were not rewritten, nor
                // one whose body lacks the bound its reservation counted on.
                reply(st, &reply::internal_error());
                return Verdict::Pause;
            }
            // Bench builds with `ablate-export` build and set no filter state.
            if !cfg!(feature = "ablate-export") {
                for (name, value) in export::properties(gw.settings.export_metadata, &fwd.identity) {
                    abi::set_property(name, value.as_bytes());
                }
            }
            st.acct.went_upstream(Forwarded::of(&gw, &fwd));
            Verdict::Continue
        }
    }
}

/// The upstream rewrite as the core's header edits, one host call each (`:path`,
/// `:authority`, the key removed, the credential and identity set): fewer and cheaper than
/// rewriting the whole map (issue 20). `false`: the host refused one.
fn write_upstream(gw: &mlgate_core::Gateway, fwd: &mlgate_core::Forward<'_, '_>, req: &Request<'_>) -> bool {
    let mut edits = Vec::with_capacity(8);
    fwd.upstream_edits(gw, req, &mut edits);
    edits.iter().all(|e| match *e {
        Edit::Add(name, value) => abi::add_header(abi::REQUEST_HEADERS, name, value),
        Edit::Replace(name, value) => abi::replace_header(abi::REQUEST_HEADERS, name, value),
        Edit::Remove(name) => abi::remove_header(abi::REQUEST_HEADERS, name),
    })
}

/// An answer arrived: the waiting stream (if any) becomes the effective context, is judged
/// again with the answer by the same `proxy_on_request_headers`, and resumes if it goes
/// upstream (a local reply has ended it already).
fn resume(token: u32, answer: Result<Vec<u8>, u32>) {
    let Some(stream) = rls::on_answer(token, answer, &mut SharedData) else { return };
    if !abi::set_effective_context(stream) {
        rls::forget(stream);
        return;
    }
    let verdict = with_stream(stream, |st| match (st.held_headers.take(), abi::header_map(abi::REQUEST_HEADERS)) {
        // A call that carries tokens: its first headers (the rewritten ones went on) and its body.
        (Some(buf), _) => {
            let max = st.gateway.as_ref().map_or(0, |g| g.settings.max_request_body_bytes as usize);
            let body = abi::buffer(abi::REQUEST_BODY, max.saturating_add(1)).unwrap_or_default();
            judge(stream, st, &buf, Some(&body), true)
        }
        (None, Some(buf)) => judge(stream, st, &buf, None, false),
        (None, None) => {
            reply(st, &reply::internal_error());
            Verdict::Pause
        }
    });
    rls::unwait(stream);
    if verdict == Some(Verdict::Continue) {
        abi::continue_request();
    }
}

/// A call's response message (a unary call's only success callback).
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_root: u32, token: u32, size: usize) {
    let _p = profile::callback(profile::Cb::GrpcReceive);
    resume(token, Ok(abi::buffer(abi::GRPC_RECEIVE_BUFFER, size).unwrap_or_default()));
}

/// A call failed (its gRPC status: 4 deadline exceeded, 14 unavailable, ...).
#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_root: u32, token: u32, status: u32) {
    let _p = profile::callback(profile::Cb::GrpcClose);
    resume(token, Err(status));
}
