#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use crate::time::{parse_rfc3339_ms, timespan};

#[test]
fn rfc3339() {
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
    assert_eq!(parse_rfc3339_ms("2023-11-14T23:13:20.250+01:00"), Some(1_700_000_000_250));
    assert_eq!(parse_rfc3339_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
    assert_eq!(parse_rfc3339_ms("2001-02-29T00:00:00Z"), None);
    assert_eq!(parse_rfc3339_ms("2023-11-14"), None);
    assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), None);
    assert_eq!(parse_rfc3339_ms("2023-11-14T22:13:20"), None);
}

#[test]
fn dotnet_timespan() {
    assert_eq!(timespan(0), "00:00:00");
    assert_eq!(timespan(59), "00:00:59");
    assert_eq!(timespan(3_661), "01:01:01");
    assert_eq!(timespan(86_399), "23:59:59");
    assert_eq!(timespan(86_400), "1.00:00:00");
    // APIM's observed "20.09:58:55".
    assert_eq!(timespan(20 * 86_400 + 9 * 3600 + 58 * 60 + 55), "20.09:58:55");
}
