//! The rest of a stream: the request body of a call that carries tokens (read whole, then
//! judged), body sizes, the response headers (the limits' headers added), the response of a
//! metered call read for its usage as it passes, the admissions of a call held under an
//! `increment_condition` settled by its status, and `proxy_on_log`, where the finished call is counted in
//! the usage metrics, its body bytes against a bandwidth quota and its tokens settled.

use super::abi::{self, CONTINUE, STOP_AND_BUFFER};
use super::request::judge_body;
use super::store::SharedData;
use super::streams::{with_stream, Stream};
use super::{profile, rls};
use mlgate_core::admit::condition::{self, Conditional};
use mlgate_core::model::Gateway;

// Bench builds with `ablate-body` do not export it (Envoy then never enters the VM for a body).
#[cfg_attr(not(feature = "ablate-body"), no_mangle)]
#[cfg_attr(feature = "ablate-body", allow(dead_code))]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::RequestBody);
    if rls::waiting(id) {
        add_body(id, size, false);
        // Held with the paused headers until the remote store answers.
        return STOP_AND_BUFFER;
    }
    with_stream(id, |st| {
        if !st.reading_body {
            st.acct.body(size as u64, false);
            return CONTINUE;
        }
        read_body(id, st, size, end_of_stream)
    })
    .unwrap_or(CONTINUE)
}

/// A call that carries tokens: the body is held until it is whole (`size` is all of it so
/// far), then the call is judged with it: released (perhaps rewritten) or refused, which
/// resets the upstream request before any of the body reached it. A body past
/// `max_request_body_bytes` is judged at once with one byte more than the limit (the core
/// refuses it) instead of being held further.
fn read_body(id: u32, st: &mut Stream, size: usize, end_of_stream: bool) -> u32 {
    let max = st.gateway.as_ref().map_or(0, |g| g.settings.max_request_body_bytes as usize);
    if size <= max && !end_of_stream {
        return STOP_AND_BUFFER;
    }
    st.reading_body = false;
    let body = abi::buffer(abi::REQUEST_BODY, size.min(max.saturating_add(1))).unwrap_or_default();
    let verdict = judge_body(id, st, &body);
    st.acct.body(size as u64, false);
    verdict.code()
}

/// Request trailers arrived: a body held for judgement ends here (no body callback says so).
fn body_ended_by_trailers(id: u32) -> u32 {
    with_stream(id, |st| {
        if !st.reading_body {
            return CONTINUE;
        }
        let max = st.gateway.as_ref().map_or(0, |g| g.settings.max_request_body_bytes as usize);
        st.reading_body = false;
        let body = abi::buffer(abi::REQUEST_BODY, max.saturating_add(1)).unwrap_or_default();
        let verdict = judge_body(id, st, &body);
        st.acct.body(body.len() as u64, false);
        verdict.code()
    })
    .unwrap_or(CONTINUE)
}

/// Trailers of a paused request wait with it (Envoy would otherwise resume the headers); for a
/// call that carries tokens they end the body it holds, which is judged now.
#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(id: u32, _trailers: usize) -> u32 {
    let _p = profile::callback(profile::Cb::RequestTrailers);
    if rls::waiting(id) {
        1
    } else {
        body_ended_by_trailers(id)
    }
}

// Bench builds with `ablate-body` do not export it (Envoy then never enters the VM for a body).
#[cfg_attr(not(feature = "ablate-body"), no_mangle)]
#[cfg_attr(feature = "ablate-body", allow(dead_code))]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::ResponseBody);
    with_stream(id, |st| {
        if !st.acct.metering() {
            st.acct.body(size as u64, true);
            return CONTINUE;
        }
        if let Some(chunk) = abi::buffer(abi::RESPONSE_BODY, size) {
            st.acct.response_chunk(&chunk);
        }
        st.acct.body(size as u64, true);
        CONTINUE
    })
    .unwrap_or(CONTINUE)
}

fn add_body(id: u32, size: usize, response: bool) {
    with_stream(id, |st| st.acct.body(size as u64, response));
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::ResponseHeaders);
    with_stream(id, |st| {
        // The clock and `:status` are read only for a call that went upstream.
        let (now_ns, status) =
            if st.acct.upstream() { (abi::now_ns(), abi::header_value(abi::RESPONSE_HEADERS, ":status")) } else { (0, None) };
        for (k, v) in st.acct.response_started(now_ns, status.as_deref()) {
            // Bench builds with `ablate-response-headers` add none.
            if !cfg!(feature = "ablate-response-headers") {
                abi::add_header(abi::RESPONSE_HEADERS, k.as_bytes(), v.as_bytes());
            }
        }
        if let (Some((held, status)), Some(gw)) = (st.acct.status_known(status.as_deref()), st.gateway.clone()) {
            settle_status(st, &gw, &held, status, now_ns);
        }
        if st.acct.metering() {
            if let Some(gw) = st.gateway.clone() {
                let content_type = abi::header_value(abi::RESPONSE_HEADERS, "content-type");
                // Never held: proxy-wasm stops a response's body callbacks with its headers, so
                // the Wasm form cannot add `tokens_consumed_header` after reading the usage
                // (the dynamic module does).
                let _hold = st.acct.meter_response(&gw, content_type.as_deref());
            }
        }
        CONTINUE
    })
    .unwrap_or(CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    let _p = profile::callback(profile::Cb::Log);
    with_stream(id, |st| {
        let Some(gw) = st.gateway.clone() else { return };
        // One clock reading (the host's wall clock) for the end of the call, its report bucket,
        // its settlements and its bandwidth.
        let now_ns = abi::now_ns();
        let ended = st.acct.end(now_ns);
        if let (Some(call), Some(u)) = (ended.call, st.usage.as_ref()) {
            u.record(&gw, &call, now_ns / 1_000_000);
        }
        if let Some(held) = ended.conditional {
            // Ended without a response: no status counts it.
            settle_status(st, &gw, &held, 0, now_ns);
        }
        if let Some((metered, usage)) = ended.tokens {
            let events = rls::settle_tokens(id, &gw, &metered, usage, now_ns / 1_000_000, &mut SharedData);
            if let Some(s) = &st.stats {
                s.count(&events);
            }
        }
        let Some((sub, bytes)) = ended.bandwidth else { return };
        let events = rls::record_bandwidth(&gw, sub, bytes, now_ns / 1_000_000, &mut SharedData);
        if let Some(s) = &st.stats {
            s.count(&events);
        }
    });
}

/// Gives back what a call held in limits that do not count its status (`increment_condition`).
fn settle_status(st: &Stream, gw: &Gateway, held: &Conditional, status: u16, now_ns: u64) {
    let events = condition::settle_status(gw, held, status, now_ns / 1_000_000, &mut SharedData);
    if let Some(s) = &st.stats {
        s.count(&events);
    }
}
