//! Instants and calendar arithmetic in a program's time zone.
//!
//! An instant is whole seconds since the Unix epoch ([`Timestamp`]); the event time
//! `created` is parsed from RFC 3339 (fractions of a second are dropped: every time the
//! engine prints is `YYYY-MM-DDTHH:MM:SSZ`). Local calendar boundaries (day, ISO week,
//! month, year, "N months after") are computed with the IANA database of `chrono-tz`.
//! A local time that does not exist (a daylight-saving gap) moves forward by the gap; an
//! ambiguous one takes the earlier instant (SPEC section 5).
//!
//! Every conversion is computed from its inputs alone: no cache, no hidden state (UTC, the
//! common zone, takes no database lookup at all).
//!
//! Owns: parsing and printing instants, local boundaries. Must not read a clock.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses an RFC 3339 time such as `2026-03-01T10:00:00Z` or `2026-03-01T11:00:00+01:00`.
    /// Times are accepted in the years 0001 to 9998 (UTC), so that every time the engine
    /// prints is `YYYY-MM-DDTHH:MM:SSZ` and calendar arithmetic around it stays in range.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        use chrono::Datelike;
        DateTime::parse_from_rfc3339(text)
            .ok()
            .filter(|t| (1..=9998).contains(&t.naive_utc().year()))
            .map(|t| Timestamp(t.timestamp()))
    }

    fn utc(self) -> Option<NaiveDateTime> {
        DateTime::from_timestamp(self.0, 0).map(|t| t.naive_utc())
    }

    /// The local date and time of this instant in `tz`.
    pub fn local(self, tz: Tz) -> Option<NaiveDateTime> {
        match is_utc(tz) {
            true => self.utc(),
            false => self.utc().map(|t| tz.from_utc_datetime(&t).naive_local()),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` for the years 0001 to 9999, without a format string.
    pub(crate) fn write_utc(self, out: &mut [u8; 20]) -> bool {
        /// Days from 0000-03-01 to 1970-01-01.
        const EPOCH_SHIFT: i64 = 719_468;
        // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
        if !(-62_135_596_800..=253_402_300_799).contains(&self.0) {
            return false;
        }
        let (days, secs) = (self.0.div_euclid(86_400), self.0.rem_euclid(86_400));
        // The civil date of a day number (H. Hinnant, "chrono-compatible low-level date
        // algorithms"), in a proleptic Gregorian calendar whose years start in March.
        let z = days + EPOCH_SHIFT;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let digits = |out: &mut [u8], mut v: i64| {
            for b in out.iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        digits(&mut out[0..4], year);
        out[4] = b'-';
        digits(&mut out[5..7], month);
        out[7] = b'-';
        digits(&mut out[8..10], day);
        out[10] = b'T';
        digits(&mut out[11..13], secs / 3600);
        out[13] = b':';
        digits(&mut out[14..16], secs / 60 % 60);
        out[16] = b':';
        digits(&mut out[17..19], secs % 60);
        out[19] = b'Z';
        true
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SSZ`, in UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 20];
        if self.write_utc(&mut buf) {
            // Only ASCII digits and separators were written.
            return f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?);
        }
        match self.utc() {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ")),
            None => write!(f, "{}", self.0),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 20];
        match self.write_utc(&mut buf) {
            true => s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?),
            false => s.collect_str(self),
        }
    }
}

/// The instant of a local date and time in `tz`: a time in a gap moves forward by the gap,
/// an ambiguous time takes the earlier instant.
pub fn from_local(local: NaiveDateTime, tz: Tz) -> Option<Timestamp> {
    if is_utc(tz) {
        return Some(Timestamp(local.and_utc().timestamp()));
    }
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(Timestamp(t.timestamp())),
        LocalResult::Ambiguous(a, b) => Some(Timestamp(a.timestamp().min(b.timestamp()))),
        LocalResult::None => {
            // In a gap: find the last valid local time before it and keep its offset, which
            // moves the wall time forward by the length of the gap.
            let step = Duration::minutes(15);
            let mut back = local;
            for _ in 0..(4 * 48) {
                back = back.checked_sub_signed(step)?;
                if let Some(before) = tz.from_local_datetime(&back).earliest() {
                    let offset = before.naive_local() - before.naive_utc();
                    let utc = local.checked_sub_signed(offset)?;
                    return Some(Timestamp(utc.and_utc().timestamp()));
                }
            }
            None
        }
    }
}

/// Whether `tz` is UTC under one of its names: local time is UTC, with no database lookup.
fn is_utc(tz: Tz) -> bool {
    matches!(
        tz,
        Tz::UTC
            | Tz::UCT
            | Tz::Universal
            | Tz::Zulu
            | Tz::Etc__UTC
            | Tz::Etc__UCT
            | Tz::Etc__Universal
            | Tz::Etc__Zulu
    )
}

/// The start of the local day that holds `t`, and the start of the next one.
pub fn day_bounds(t: Timestamp, tz: Tz) -> Option<(Timestamp, Timestamp)> {
    let date = t.local(tz)?.date();
    Some((
        start_of(date, tz)?,
        start_of(date.checked_add_signed(Duration::days(1))?, tz)?,
    ))
}

/// The local midnight that starts `date` in `tz`.
pub fn start_of(date: NaiveDate, tz: Tz) -> Option<Timestamp> {
    from_local(date.and_hms_opt(0, 0, 0)?, tz)
}

/// A calendar window: `day`, ISO `week` (Monday), `month`, `year`, or `lifetime`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Window {
    /// The local calendar day.
    Day,
    /// The ISO week, Monday to Sunday, local.
    Week,
    /// The local calendar month.
    Month,
    /// The local calendar year.
    Year,
    /// All time.
    Lifetime,
}

impl Window {
    /// Parses a config `window`.
    pub fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "day" => Window::Day,
            "week" => Window::Week,
            "month" => Window::Month,
            "year" => Window::Year,
            "lifetime" => Window::Lifetime,
            _ => return None,
        })
    }

    /// The half-open range `[start, end)` of the window that holds `t` in `tz`; `None`
    /// for `lifetime` (or a time outside the calendar's range).
    pub fn range(self, t: Timestamp, tz: Tz) -> Option<(Timestamp, Timestamp)> {
        let date = t.local(tz)?.date();
        let (first, next) = match self {
            Window::Lifetime => return None,
            Window::Day => (date, date.succ_opt()?),
            Window::Week => {
                let monday = date.checked_sub_signed(Duration::days(i64::from(
                    date.weekday().num_days_from_monday(),
                )))?;
                (monday, monday.checked_add_signed(Duration::days(7))?)
            }
            Window::Month => {
                let first = date.with_day(1)?;
                (first, add_months_date(first, 1)?)
            }
            Window::Year => {
                let first = NaiveDate::from_ymd_opt(date.year(), 1, 1)?;
                (first, NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?)
            }
        };
        Some((start_of(first, tz)?, start_of(next, tz)?))
    }
}

/// The same day `months` calendar months later; a day the month lacks becomes its last day.
pub fn add_months_date(date: NaiveDate, months: u32) -> Option<NaiveDate> {
    shift_months_date(date, i64::from(months))
}

/// The same day `months` calendar months later (earlier when negative); a day the month
/// lacks becomes its last day.
pub fn shift_months_date(date: NaiveDate, months: i64) -> Option<NaiveDate> {
    let total = i64::from(date.year()) * 12 + i64::from(date.month0()) + months;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = (total.rem_euclid(12) + 1) as u32;
    let mut day = date.day();
    loop {
        if let Some(d) = NaiveDate::from_ymd_opt(year, month, day) {
            return Some(d);
        }
        if day <= 28 {
            return None;
        }
        day -= 1;
    }
}

/// "N months after" `t` (SPEC section 5): the same local date and time `months` calendar
/// months later in `tz`.
pub fn add_months(t: Timestamp, months: u32, tz: Tz) -> Option<Timestamp> {
    let local = t.local(tz)?;
    let date = add_months_date(local.date(), months)?;
    from_local(date.and_time(local.time()), tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn parses_and_prints_utc() {
        assert_eq!(
            ts("2026-03-01T11:00:00+01:00").to_string(),
            "2026-03-01T10:00:00Z"
        );
        assert_eq!(
            ts("2026-03-01T10:00:00.999Z").to_string(),
            "2026-03-01T10:00:00Z"
        );
        assert!(Timestamp::parse_rfc3339("2026-03-01").is_none());
        assert!(Timestamp::parse_rfc3339("2026-02-30T00:00:00Z").is_none());
    }

    #[test]
    fn prints_like_the_format_string_over_the_whole_range() {
        let check = |s: i64| {
            let t = Timestamp(s);
            let want = match t.utc() {
                Some(u) => u.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                None => s.to_string(),
            };
            assert_eq!(t.to_string(), want, "{s}");
        };
        // The edges of the fast path and just beyond them, then a walk across every era
        // with steps that land on every time of day and both sides of leap days.
        for s in [
            -62_135_596_801,
            -62_135_596_800,
            0,
            -1,
            951_782_400,   // 2000-02-29
            4_107_542_400, // 2100-03-01
            253_402_300_799,
            253_402_300_800,
            i64::MIN,
            i64::MAX,
        ] {
            check(s);
        }
        let mut s = -62_135_596_800i64;
        while s < 253_402_300_800 {
            check(s);
            s += 86_400 * 97 + 3_607;
        }
    }

    #[test]
    fn the_utc_shortcut_agrees_with_the_database() {
        for tz in [
            Tz::UTC,
            Tz::UCT,
            Tz::Universal,
            Tz::Zulu,
            Tz::Etc__UTC,
            Tz::Etc__UCT,
            Tz::Etc__Universal,
            Tz::Etc__Zulu,
        ] {
            assert!(is_utc(tz));
            let mut s = -62_135_596_800i64;
            while s < 253_402_300_800 {
                let utc = DateTime::from_timestamp(s, 0).unwrap().naive_utc();
                assert_eq!(
                    Timestamp(s).local(tz),
                    Some(tz.from_utc_datetime(&utc).naive_local())
                );
                let db = tz.from_local_datetime(&utc).single().map(|t| t.timestamp());
                assert_eq!(from_local(utc, tz).map(|t| t.0), db, "{tz} {s}");
                s += 86_400 * 389 + 3_607;
            }
        }
        assert!(!is_utc("Europe/London".parse().unwrap()));
    }

    #[test]
    fn windows_in_utc() {
        let t = ts("2026-03-15T10:00:00Z"); // a Sunday
        let utc = chrono_tz::UTC;
        let (a, b) = Window::Month.range(t, utc).unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-03-01T00:00:00Z".into(), "2026-04-01T00:00:00Z".into())
        );
        let (a, b) = Window::Week.range(t, utc).unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-03-09T00:00:00Z".into(), "2026-03-16T00:00:00Z".into())
        );
        let (a, b) = Window::Year.range(t, utc).unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-01-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
        );
        let (a, b) = Window::Day.range(t, utc).unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-03-15T00:00:00Z".into(), "2026-03-16T00:00:00Z".into())
        );
        assert!(Window::Lifetime.range(t, utc).is_none());
    }

    #[test]
    fn windows_follow_the_program_time_zone() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 23:30 UTC on March 31 is already April 1 in Berlin (UTC+2 in summer).
        let t = ts("2026-03-31T23:30:00Z");
        let (a, b) = Window::Month.range(t, tz).unwrap();
        assert_eq!(a.to_string(), "2026-03-31T22:00:00Z");
        assert_eq!(b.to_string(), "2026-04-30T22:00:00Z");
    }

    #[test]
    fn months_clamp_to_the_last_day() {
        let utc = chrono_tz::UTC;
        assert_eq!(
            add_months(ts("2026-01-31T10:00:00Z"), 1, utc)
                .unwrap()
                .to_string(),
            "2026-02-28T10:00:00Z"
        );
        assert_eq!(
            add_months(ts("2024-01-31T10:00:00Z"), 1, utc)
                .unwrap()
                .to_string(),
            "2024-02-29T10:00:00Z"
        );
        assert_eq!(
            add_months(ts("2026-06-01T10:00:00Z"), 12, utc)
                .unwrap()
                .to_string(),
            "2027-06-01T10:00:00Z"
        );
    }

    #[test]
    fn gaps_move_forward_and_ambiguity_takes_the_earlier() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 02:30 does not exist in Berlin: it becomes 03:30 CEST = 01:30 UTC.
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(
            from_local(gap, tz).unwrap().to_string(),
            "2026-03-29T01:30:00Z"
        );
        // 2026-10-25 02:30 happens twice: the earlier is 00:30 UTC (CEST).
        let amb = NaiveDate::from_ymd_opt(2026, 10, 25)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(
            from_local(amb, tz).unwrap().to_string(),
            "2026-10-25T00:30:00Z"
        );
    }
}
