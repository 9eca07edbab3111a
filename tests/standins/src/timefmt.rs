//! RFC 3339 timestamps (Kubernetes' Time and MicroTime) without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, mo, da) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    (
        y,
        mo,
        da,
        s / 3600,
        (s / 60) % 60,
        s % 60,
        d.subsec_micros(),
    )
}

/// `2006-01-02T15:04:05Z`
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = split(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2006-01-02T15:04:05.000000Z`
pub fn micro(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, us) = split(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

pub fn now_micro() -> String {
    micro(SystemTime::now())
}

/// Parses the UTC forms above (fractional seconds optional).
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.split(':');
    let h: u64 = tp.next()?.parse().ok()?;
    let mi: u64 = tp.next()?.parse().ok()?;
    let sec: u64 = tp.next()?.parse().ok()?;
    let days = u64::try_from(days_from_civil(y, mo, d)).ok()?;
    let mut micros = 0u64;
    if !frac.is_empty() {
        let f: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = f.parse().ok()?;
    }
    Some(
        UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60 + sec)
            + Duration::from_micros(micros),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(micro(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse(&micro(t)), Some(t));
        assert_eq!(
            parse("2000-02-29T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        assert_eq!(parse("junk"), None);
    }
}
