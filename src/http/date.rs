//! The `Date` header of every response (RFC 9110 §6.6.1), formatted once a second.
//!
//! Each thread keeps the line for the current second and formats a new one only when the
//! second changes, so a response pays one clock read and a 37-byte copy, with nothing
//! shared between threads. The clock is the system's wall clock (`Date` is calendar
//! time), not tokio's.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`: the IMF-fixdate is always 29 bytes.
pub const LINE_LEN: usize = 37;

/// A `Date` line, CRLF included.
pub type Line = [u8; LINE_LEN];

thread_local! {
    static CACHED: Cell<(u64, Line)> = const { Cell::new((u64::MAX, [0; LINE_LEN])) };
}

/// The `Date` line for now.
pub fn line() -> Line {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, line) = cached.get();
        if at == secs {
            return line;
        }
        let line = format_line(secs);
        cached.set((secs, line));
        line
    })
}

/// Formats the line for `secs` since the Unix epoch.
pub fn format_line(secs: u64) -> Line {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    out[6..9].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[11..13], u64::from(day));
    out[14..17].copy_from_slice(MONTHS[(month - 1) as usize]);
    let year = year.min(9999);
    two(&mut out[18..20], year / 100);
    two(&mut out[20..22], year % 100);
    two(&mut out[23..25], rem / 3600);
    two(&mut out[26..28], rem % 3600 / 60);
    two(&mut out[29..31], rem % 60);
    out
}

fn two(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (Howard Hinnant's
/// algorithm).
pub fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((yoe + era * 400 + i64::from(m <= 2)) as u64, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(&format_line(0), b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
        // RFC 9110's own example.
        assert_eq!(
            &format_line(784_111_777),
            b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        );
        assert_eq!(
            &format_line(1_796_059_376),
            b"Date: Mon, 30 Nov 2026 17:22:56 GMT\r\n"
        );
        // A leap day.
        assert_eq!(
            &format_line(951_825_600),
            b"Date: Tue, 29 Feb 2000 12:00:00 GMT\r\n"
        );
    }

    #[test]
    fn the_line_is_the_current_second() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let line = line();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(line == format_line(before) || line == format_line(after));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
