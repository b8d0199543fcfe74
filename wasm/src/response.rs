//! The rest of a stream: body sizes, the response headers (the limits' headers added), and
//! `proxy_on_log`, where the finished call is counted in the usage metrics and its body bytes
//! against a bandwidth quota.

use super::abi::{self, CONTINUE, STOP_AND_BUFFER};
use super::store::SharedData;
use super::streams::with_stream;
use super::{profile, rls};

#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::RequestBody);
    add_body(id, size, false);
    if rls::waiting(id) {
        // Held with the paused headers until the remote store answers.
        STOP_AND_BUFFER
    } else {
        CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::ResponseBody);
    add_body(id, size, true);
    CONTINUE
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
            abi::add_header(abi::RESPONSE_HEADERS, &k, &v);
        }
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    let _p = profile::callback(profile::Cb::Log);
    with_stream(id, |st| {
        let Some(gw) = st.gateway.clone() else { return };
        // One clock reading for the end of the call and its bandwidth.
        let now_ns = abi::now_ns();
        let ended = st.acct.end(now_ns);
        if let (Some(call), Some(u)) = (ended.call, st.usage.as_ref()) {
            u.record(&gw, &call);
        }
        let Some((sub, bytes)) = ended.bandwidth else { return };
        let events = rls::record_bandwidth(&gw, sub, bytes, now_ns / 1_000_000, &mut SharedData);
        if let Some(s) = &st.stats {
            s.count(&events);
        }
    });
}
