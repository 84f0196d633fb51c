//! Inngest's duration strings (`"1s"`, `"10m"`, `"1h30m"`, `"24h"`, `"7d"`).
//!
//! Users port functions from Inngest's TypeScript, where durations are
//! strings; accepting the same strings keeps a port a copy-paste.

use crate::Error;
use std::time::Duration;

/// The longest sleep or wait the host accepts, as in Inngest: one year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Something that names a span of time: an Inngest string or a `Duration`.
pub trait IntoDuration {
    /// The span, or an error that says what was wrong with it.
    fn into_duration(self) -> Result<Duration, Error>;
}

impl IntoDuration for Duration {
    fn into_duration(self) -> Result<Duration, Error> {
        Ok(self)
    }
}

impl IntoDuration for &str {
    fn into_duration(self) -> Result<Duration, Error> {
        parse_duration(self).map_err(Error::non_retriable)
    }
}

impl IntoDuration for String {
    fn into_duration(self) -> Result<Duration, Error> {
        self.as_str().into_duration()
    }
}

impl IntoDuration for &String {
    fn into_duration(self) -> Result<Duration, Error> {
        self.as_str().into_duration()
    }
}

/// Parses a duration such as `"500ms"`, `"30s"`, `"1h30m"` or `"7d"`: one or
/// more `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d` and `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let complain = |why: &str| {
        format!(
            "invalid duration {text:?}: {why}; write it as Inngest does, e.g. \"30s\", \"10m\", \"1h30m\", \"7d\" (units ms, s, m, h, d, w)"
        )
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(complain("it is empty"));
    }
    let mut total_ms: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(complain("expected a number"));
        }
        let number: u128 = rest[..digits]
            .parse()
            .map_err(|_| complain("the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(complain("a number has no unit")),
            other => return Err(complain(&format!("unknown unit {other:?}"))),
        };
        rest = &rest[unit_len..];
        total_ms = total_ms
            .checked_add(number.saturating_mul(unit_ms))
            .ok_or_else(|| complain("it is too long"))?;
    }
    let duration =
        Duration::from_millis(u64::try_from(total_ms).map_err(|_| complain("it is too long"))?);
    if duration > MAX_DURATION {
        return Err(complain(
            "it is longer than a year, the longest sleep or wait",
        ));
    }
    Ok(duration)
}

/// Milliseconds of a duration, saturating: the WIT interface speaks u64 ms.
pub(crate) fn as_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inngest_examples() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(1_209_600)
        );
        assert_eq!(parse_duration(" 1m1s ").unwrap(), Duration::from_secs(61));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "1.5h",
            "-1s",
            "1h 30m",
            "366d",
            "99999999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad:?} gave {err}");
        }
        assert!(
            parse_duration("1x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
        assert!(
            parse_duration("366d")
                .unwrap_err()
                .contains("longer than a year")
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text parses or is refused with an explanation, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,24}") {
            if let Err(message) = parse_duration(&text) {
                prop_assert!(message.contains("invalid duration"));
            }
        }

        /// Inngest's notation adds its parts up.
        #[test]
        fn parts_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            prop_assert_eq!(parse_duration(&text), Ok(expected));
        }
    }
}
