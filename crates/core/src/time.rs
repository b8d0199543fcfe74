//! Small time helpers: RFC 3339 parsing for subscription start dates and .NET `TimeSpan`
//! formatting for APIM's quota messages. No clock here: callers pass `now`.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The decimal number in `b[from..to]` (ASCII digits only).
fn num(b: &[u8], from: usize, to: usize) -> Option<u32> {
    let digits = b.get(from..to)?;
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

/// `2024-01-31T12:00:00Z`, `2024-01-31T12:00:00.5+02:00` → milliseconds since the epoch.
/// Works on bytes throughout, so any input (non-ASCII included) is an answer, never a panic.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied();
    if b.len() < 20 || at(4) != Some(b'-') || at(7) != Some(b'-') || !matches!(at(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if at(13) != Some(b':') || at(16) != Some(b':') {
        return None;
    }
    let (y, mo, d) = (num(b, 0, 4)?, num(b, 5, 7)?, num(b, 8, 10)?);
    let (h, mi, sec) = (num(b, 11, 13)?, num(b, 14, 16)?, num(b, 17, 19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let month_days = mdays.get(usize::try_from(mo).ok()?.checked_sub(1)?).copied()?;
    if d == 0 || d > month_days || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut ms = 0u64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Milliseconds from the first three digits, padded with zeros.
        for i in 0..3 {
            let digit = if i < n { frac.get(i).map_or(0, |c| c - b'0') } else { 0 };
            ms = ms * 10 + u64::from(digit);
        }
        rest = frac.get(n..)?;
    }
    let offset_s: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(rest, 1, 3)?, num(rest, 4, 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if *sign == b'+' { 1 } else { -1 };
            sign * i64::from(oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + sec.min(59)) - offset_s;
    u64::try_from(secs).ok()?.checked_mul(1000)?.checked_add(ms)
}

/// A duration as .NET prints a `TimeSpan` with the default format: `HH:MM:SS`, and
/// `d.HH:MM:SS` from one day on (APIM's quota message: "20.09:58:55").
pub fn timespan(total_secs: u64) -> String {
    let (d, rem) = (total_secs / 86_400, total_secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if d > 0 {
        format!("{d}.{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the second: `2026-01-01T00:00:00Z`
/// (the portal's "renews at"). The inverse of [`days_from_civil`], Howard Hinnant's algorithm.
pub fn format_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The UTC calendar period containing `now_ms`, as [start, end) in milliseconds: APIM's token
/// quota periods (the timestamp truncated to the unit; weeks start on Monday).
pub fn calendar_period(now_ms: u64, period: crate::model::QuotaPeriod) -> (u64, u64) {
    use crate::model::QuotaPeriod::*;
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    let ms = |days: i64| u64::try_from(days).unwrap_or(0).saturating_mul(DAY);
    match period {
        Hourly => (now_ms / HOUR * HOUR, now_ms / HOUR * HOUR + HOUR),
        Daily => (now_ms / DAY * DAY, now_ms / DAY * DAY + DAY),
        Weekly => {
            // 1970-01-01 was a Thursday: Monday is 3 days later, in every week's count.
            let days = (now_ms / DAY) as i64;
            let monday = days - (days + 3).rem_euclid(7);
            (ms(monday), ms(monday + 7))
        }
        Monthly | Yearly => {
            let (y, m, _) = civil_from_days((now_ms / DAY) as i64);
            let (start, next) =
                if period == Monthly { ((y, m), if m == 12 { (y + 1, 1) } else { (y, m + 1) }) } else { ((y, 1), (y + 1, 1)) };
            (ms(days_from_civil(start.0, start.1, 1)), ms(days_from_civil(next.0, next.1, 1)))
        }
    }
}

/// A wait as APIM words it in a token quota refusal: `41 seconds`, `21 minutes and 33
/// seconds`, `3 hours, 2 minutes and 1 second`, `24 days, 14 hours, 0 minutes and 5 seconds`
/// (units from the largest that is not zero).
pub fn wait_words(total_secs: u64) -> String {
    let units = [
        (total_secs / 86_400, "day"),
        (total_secs % 86_400 / 3600, "hour"),
        (total_secs % 3600 / 60, "minute"),
        (total_secs % 60, "second"),
    ];
    let first = units.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    let parts: Vec<String> = units.iter().skip(first).map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" })).collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}
