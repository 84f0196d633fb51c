//! Cron triggers, scheduled durably.
//!
//! Each schedule of a deployed function has its next fire time in the
//! journal's cron index. Firing creates the run *and* moves the index to the
//! next time after now in one write, so a host that was down at the
//! scheduled time starts the missed run once when it comes back (however
//! many times it was missed), and never twice. This module keeps the armed
//! schedules in memory and says when one is due; [`crate::runs`] does the
//! firing.

use crate::model::Clock;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::sync::Notify;

/// The name of the event a cron run receives, as in Inngest.
pub const CRON_EVENT: &str = "inngest/scheduled.timer";

/// A parsed schedule: a cron pattern in a time zone (UTC by default).
#[derive(Debug, Clone)]
pub struct Schedule {
    zone: Tz,
    cron: croner::Cron,
}

impl Schedule {
    /// Reads `0 * * * *` or `TZ=Europe/Paris 0 9 * * *` (a sixth leading
    /// field is seconds).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let (zone, pattern) = match text
            .strip_prefix("TZ=")
            .or_else(|| text.strip_prefix("CRON_TZ="))
        {
            Some(rest) => {
                let (zone, pattern) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    format!("cron {text:?} has a time zone but no schedule after it")
                })?;
                let zone: Tz = zone.parse().map_err(|_| {
                    format!("cron {text:?}: unknown time zone {zone:?}; use an IANA name such as Europe/Paris")
                })?;
                (zone, pattern.trim())
            }
            None => (Tz::UTC, text),
        };
        let cron: croner::Cron = pattern.parse().map_err(|e| {
            format!("cron {text:?} is not a valid schedule ({e}); write five fields, e.g. \"0 * * * *\" for every hour")
        })?;
        Ok(Schedule { zone, cron })
    }

    /// The first fire time strictly after `after_ms`, in ms.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = Utc
            .timestamp_millis_opt(after_ms as i64)
            .single()?
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

/// One armed schedule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Armed {
    /// When it fires, ms.
    pub at: u64,
    /// Its cron index key (tenant, function, schedule).
    pub key: String,
}

/// The armed schedules, soonest first.
#[derive(Default)]
pub struct CronTable {
    armed: Mutex<BTreeSet<Armed>>,
    changed: Notify,
}

impl CronTable {
    /// Arms a schedule. An entry left from an earlier time does no harm:
    /// firing checks the journal's time first.
    pub fn arm(&self, armed: Armed) {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(armed);
        self.changed.notify_one();
    }

    /// Waits until a schedule is due by `clock` and takes it.
    pub async fn next_due(&self, clock: &dyn Clock) -> Armed {
        loop {
            let first = self
                .armed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .first()
                .cloned();
            let Some(first) = first else {
                self.changed.notified().await;
                continue;
            };
            if first.at > clock.now_ms() {
                tokio::select! {
                    _ = clock.sleep_until(first.at) => {}
                    _ = self.changed.notified() => {}
                }
                continue;
            }
            self.armed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&first);
            return first;
        }
    }
}

/// The cron index key of `schedule` of `function` in `tenant`.
pub fn index_key(tenant: &str, function: &str, schedule: &str) -> String {
    format!("{tenant}\0{function}\0{schedule}")
}

/// The prefix of every cron index key of `function`.
pub fn function_prefix(tenant: &str, function: &str) -> String {
    format!("{tenant}\0{function}\0")
}

/// Splits a cron index key into tenant, function and schedule.
pub fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(3, '\0');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_in_utc_and_in_a_time_zone() {
        // 2026-01-15 08:30:00 UTC.
        let at = 1_768_465_800_000;
        let hourly = Schedule::parse("0 * * * *").unwrap();
        assert_eq!(hourly.next_after(at), Some(at + 30 * 60_000));
        // 09:00 in Paris is 08:00 UTC in January: the next is tomorrow.
        let paris = Schedule::parse("TZ=Europe/Paris 0 9 * * *").unwrap();
        assert_eq!(
            paris.next_after(at),
            Some(at - 30 * 60_000 + 24 * 3_600_000)
        );
        let seconds = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(seconds.next_after(at), Some(at + 2_000));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        assert!(
            Schedule::parse("61 * * * *")
                .unwrap_err()
                .contains("not a valid schedule")
        );
        assert!(
            Schedule::parse("TZ=Mars/Base 0 * * * *")
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert!(
            Schedule::parse("TZ=Europe/Paris")
                .unwrap_err()
                .contains("no schedule")
        );
        let key = index_key("t", "f", "0 * * * *");
        assert_eq!(split_key(&key), Some(("t", "f", "0 * * * *")));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text parses or is refused; a schedule's next time is always
        /// after the time asked about.
        #[test]
        fn any_text_parses_or_is_refused_and_next_times_move_forward(
            text in "(TZ=[A-Za-z/_]{0,14} )?[0-9*/,-]{1,4}( [0-9*/,-]{1,4}){0,5}",
            after in 0u64..4_000_000_000_000,
        ) {
            if let Ok(schedule) = Schedule::parse(&text)
                && let Some(next) = schedule.next_after(after)
            {
                prop_assert!(next > after);
            }
        }
    }
}
