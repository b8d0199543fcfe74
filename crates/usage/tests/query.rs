//! The report query options: APIM's `$filter` grammar on `timestamp` and the identifiers,
//! `$top`, `$skip`, `$orderby` and `interval`; every malformed one is an error naming its
//! parameter, and no input panics.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use mlgate_core::time::parse_rfc3339_ms;
use mlgate_usage::query::{duration, interval, parse, Field, Query};

fn ms(t: &str) -> u64 {
    parse_rfc3339_ms(t).unwrap()
}

fn ok(q: &str) -> Query {
    parse(q.as_bytes()).unwrap_or_else(|e| panic!("{q}: {e:?}"))
}

fn err(q: &str) -> (&'static str, String) {
    match parse(q.as_bytes()) {
        Ok(v) => panic!("{q} must be refused, got {v:?}"),
        Err(e) => (e.target, e.message),
    }
}

#[test]
fn apims_own_filters_give_a_window() {
    // The REST reference's example, percent-encoded as a client sends it.
    let q = ok("$filter=timestamp%20ge%20datetime'2017-06-01T00:00:00'%20and%20timestamp%20le%20datetime'2017-06-04T00:00:00'&api-version=2022-08-01");
    assert_eq!(q.window, Some((ms("2017-06-01T00:00:00Z"), ms("2017-06-04T00:00:00Z"))));
    // The developer portal's: bare ISO timestamps with milliseconds, `+` for spaces.
    let q = ok("$filter=timestamp+ge+2019-09-05T19:30:00.000Z+and+timestamp+le+2019-09-05T21:00:00.000Z");
    assert_eq!(q.window, Some((ms("2019-09-05T19:30:00Z"), ms("2019-09-05T21:00:00Z"))));
    // gt and lt are strict; an offset is honoured; the narrowest bound wins.
    let q = ok(
        "$filter=timestamp gt '2026-01-01T00:00:00%2B01:00' and timestamp lt '2026-01-01T02:00:00' and timestamp le '2026-01-01T05:00:00'",
    );
    assert_eq!(q.window, Some((ms("2025-12-31T23:00:00Z") + 1, ms("2026-01-01T02:00:00Z") - 1)));
    // One bound only.
    assert_eq!(ok("$filter=timestamp ge '2026-01-01T00:00:00Z'").window, Some((ms("2026-01-01T00:00:00Z"), u64::MAX)));
    // No timestamp clause: no window (the metrics answer).
    assert_eq!(ok("").window, None);
    assert_eq!(ok("$filter=apiId eq 'a'").window, None);
}

#[test]
fn identifier_filters_combine_with_and() {
    let q = ok("$filter=timestamp ge '2026-01-01T00:00:00' and apiId eq '/apis/azureml-demo' and operationId eq 'rrs-execute' \
                and productId eq '/products/starter' and subscriptionId eq 'it''s'");
    assert_eq!(q.api.as_deref(), Some("/apis/azureml-demo"));
    assert_eq!(q.operation.as_deref(), Some("rrs-execute"));
    assert_eq!(q.product.as_deref(), Some("/products/starter"));
    assert_eq!(q.subscription.as_deref(), Some("it's"));
    assert!(q.window.is_some());
}

#[test]
fn top_skip_orderby_and_interval() {
    let q = ok("$top=10&$skip=20&$orderby=callCountTotal desc,name&interval=PT1H");
    assert_eq!((q.top, q.skip), (Some(10), 20));
    assert_eq!(q.order, vec![(Field::CallCountTotal, true), (Field::Name, false)]);
    assert_eq!(q.interval_ms, Some(3_600_000));
    assert_eq!(ok("$orderby=displayName%20asc").order, vec![(Field::Name, false)]);
    assert_eq!(ok("%24top=1").top, Some(1));
    for (s, m) in [
        ("PT15M", 15),
        ("PT30M", 30),
        ("PT1H", 60),
        ("PT1H30M", 90),
        ("PT90M", 90),
        ("P1D", 1440),
        ("P1DT6H", 1800),
        ("PT900S", 15),
        ("P31D", 44640),
    ] {
        assert_eq!(interval(s), Ok(m * 60_000), "{s}");
    }
    for (m, s) in [(15, "PT15M"), (60, "PT1H"), (90, "PT1H30M"), (1440, "P1D"), (1800, "P1DT6H"), (1455, "P1DT15M")] {
        assert_eq!(duration(m * 60_000), s);
        assert_eq!(interval(s), Ok(m * 60_000));
    }
}

#[test]
fn a_bad_filter_is_refused_with_what_is_wrong() {
    for (q, says) in [
        ("$filter=timestamp ge '2026-01-01'", "not a timestamp"),
        ("$filter=timestamp ge datetime'2026-13-01T00:00:00'", "not a timestamp"),
        ("$filter=timestamp eq '2026-01-01T00:00:00'", "ge, gt, le or lt"),
        ("$filter=timestamp ge '2026-01-01T00:00:00' or timestamp le '2026-01-02T00:00:00'", "'and' only"),
        ("$filter=timestamp ge '2026-01-01T00:00:00' and", "clauses"),
        ("$filter=timestamp ge", "clauses"),
        ("$filter=", "clauses"),
        ("$filter=(timestamp ge '2026-01-01T00:00:00')", "parentheses"),
        ("$filter=timestamp ge '2026-01-01T00:00:00", "never closed"),
        ("$filter=userId eq '1'", "no users"),
        ("$filter=apiRegion eq 'West Europe'", "one region"),
        ("$filter=callCountTotal gt 5", "not a field it filters on"),
        ("$filter=apiId ne 'a'", "take eq"),
        ("$filter=apiId eq 'a' and apiId eq 'b'", "twice"),
        ("$filter=apiId eq 'a'b", "malformed literal"),
        ("$filter=apiId eq 'a'&$filter=apiId eq 'b'", "more than once"),
        ("$filter=apiId%20eq%20%27%FF%27", "not UTF-8"),
    ] {
        let (target, message) = err(q);
        assert_eq!(target, "$filter", "{q}");
        assert!(message.contains(says), "{q}: {message}");
    }
    let long = format!("$filter=apiId eq '{}'", "a".repeat(3000));
    assert!(err(&long).1.contains("longer than"));
    let many = ["timestamp ge '2026-01-01T00:00:00'"; 17].join(" and ");
    assert!(err(&format!("$filter={many}")).1.contains("more than 16"));
}

#[test]
fn bad_paging_ordering_and_intervals_are_refused() {
    for (q, target) in [
        ("$top=0", "$top"),
        ("$top=-1", "$top"),
        ("$top=ten", "$top"),
        ("$top=1000000000", "$top"),
        ("$top=", "$top"),
        ("$skip=-1", "$skip"),
        ("$skip=1.5", "$skip"),
        ("$orderby=colour", "$orderby"),
        ("$orderby=name sideways", "$orderby"),
        ("$orderby=name asc desc", "$orderby"),
        ("$orderby=", "$orderby"),
        ("$orderby=name,bandwidth,apiTimeAvg,callCountTotal,callCountFailed", "$orderby"),
        ("interval=PT10M", "interval"),
        ("interval=PT0M", "interval"),
        ("interval=PT15", "interval"),
        ("interval=15M", "interval"),
        ("interval=P", "interval"),
        ("interval=PT", "interval"),
        ("interval=P1W", "interval"),
        ("interval=P1M", "interval"),
        ("interval=PT1.5H", "interval"),
        ("interval=PT15M30S", "interval"),
        ("interval=PT15MT", "interval"),
        ("interval=PT1M1H", "interval"),
        ("interval=P32D", "interval"),
        ("interval=pt15m", "interval"),
        ("interval=PT15M&interval=PT15M", "interval"),
    ] {
        assert_eq!(err(q).0, target, "{q}");
    }
}

#[test]
fn no_input_panics() {
    // Hostile bytes: every prefix of nasty strings, and pseudo-random soup over the grammar's
    // own alphabet. Each is an answer, never a panic.
    let nasty = [
        "$filter=timestamp ge datetime'2026-01-01T00:00:00\u{e9}\u{e9}\u{e9}'",
        "$filter=timestamp ge '2026-01-01T00:00:00+\u{1F600}'",
        "$filter='''''''' and '' eq ''",
        "$filter=datetime' eq datetime''",
        "interval=P999999DT999999H999999M999999S",
        "interval=PT\u{1F600}M",
        "$orderby=,,,&$top=%&$skip=%zz",
        "%&=&&==$filter=%2",
    ];
    for s in nasty {
        for end in 0..=s.len() {
            if let Some(prefix) = s.get(..end) {
                let _ = parse(prefix.as_bytes());
            }
        }
    }
    let alphabet: &[u8] = b"$filter=timestamp ge le gt lt and or eq apiId '' datetime 2026-01-01T00:00:00Z +-:.%2027&interval=PT15M1HD$top=$skip=$orderby=, desc\xff\x00";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let mut s = Vec::new();
        for _ in 0..(x % 64) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        let _ = parse(&s);
    }
}
