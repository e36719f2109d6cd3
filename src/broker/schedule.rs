//! When a database's rotation facts are read next: every `rotation.watch_interval` while a
//! rotation may be under way (from shortly before `NextRotationDate` to the end of its window,
//! while a pending version exists, while RDS says the secret is rotating, for a while after a
//! refresh request), every `rotation.describe_interval` otherwise.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::RotationConfig;
use crate::source::RotationFacts;

/// How long before `NextRotationDate` the watch starts (clocks drift; a window may open early).
pub(super) const WATCH_LEAD: Duration = Duration::from_mins(1);
/// How long the watch lasts after a refresh request: a client's login failed, so a rotation may
/// be under way that no schedule announced (`RotateSecret` called by hand).
pub(super) const WATCH_AFTER_REFRESH: Duration = Duration::from_mins(2);

const DAY_SECONDS: u64 = 86_400;

/// The span in which the facts place the next rotation: from [`WATCH_LEAD`] before
/// `NextRotationDate` to the end of its window; `None` when rotation is off or unscheduled.
pub(super) fn rotation_window(facts: &RotationFacts) -> Option<(SystemTime, SystemTime)> {
    let next = facts.next_rotation.filter(|_| facts.rotation_enabled)?;
    let end = match facts.window {
        Some(length) => next + length,
        None => end_of_utc_day(next),
    };
    Some((next.checked_sub(WATCH_LEAD).unwrap_or(next), end))
}

fn end_of_utc_day(at: SystemTime) -> SystemTime {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs((seconds / DAY_SECONDS + 1) * DAY_SECONDS)
}

/// How long after a read of the facts at `at` to read them again. `watching`: something other
/// than the window (a pending version, RDS's status, a recent refresh, a free check) says to
/// watch.
pub(super) fn next_check(
    at: SystemTime,
    facts: Option<&RotationFacts>,
    watching: bool,
    config: &RotationConfig,
) -> Duration {
    if watching || facts.is_some_and(|f| f.pending_version.is_some()) {
        return config.watch_interval;
    }
    let Some((start, end)) = facts.and_then(rotation_window) else {
        return config.describe_interval;
    };
    if at >= end {
        return config.describe_interval;
    }
    // Before the window: wake when it opens, if that comes first.
    start
        .duration_since(at)
        .map_or(config.watch_interval, |until| {
            until.clamp(config.watch_interval, config.describe_interval)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_hours(1);

    fn config() -> RotationConfig {
        RotationConfig {
            describe_interval: HOUR,
            watch_interval: Duration::from_secs(10),
            refresh_min_interval: Duration::from_secs(1),
        }
    }

    /// Facts of a secret whose next rotation is `next` (seconds after the epoch), with a window.
    fn facts(next: u64, window: Option<Duration>) -> RotationFacts {
        RotationFacts {
            rotation_enabled: true,
            next_rotation: Some(UNIX_EPOCH + Duration::from_secs(next)),
            window,
            ..RotationFacts::default()
        }
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn inside_a_window_the_watch_interval_outside_the_describe_interval() {
        let day = 10 * DAY_SECONDS;
        let next = day + 3_600;
        let three_hours = facts(next, Some(3 * HOUR));
        let check = |seconds, f: &RotationFacts| next_check(at(seconds), Some(f), false, &config());
        // From the lead before the window to its end.
        assert_eq!(check(next - 60, &three_hours), Duration::from_secs(10));
        assert_eq!(
            check(next + 3 * 3_600 - 1, &three_hours),
            Duration::from_secs(10)
        );
        assert_eq!(check(next + 3 * 3_600, &three_hours), HOUR);
        // Before it: wake when it opens (never sooner than the watch interval).
        assert_eq!(
            check(next - 60 - 600, &three_hours),
            Duration::from_mins(10)
        );
        assert_eq!(check(next - 65, &three_hours), Duration::from_secs(10));
        assert_eq!(check(next - 60 - 7_200, &three_hours), HOUR);
        // No Duration: the window ends with the UTC day.
        let until_midnight = facts(next, None);
        assert_eq!(
            check(day + DAY_SECONDS - 1, &until_midnight),
            Duration::from_secs(10)
        );
        assert_eq!(check(day + DAY_SECONDS, &until_midnight), HOUR);
    }

    #[test]
    fn no_schedule_means_the_describe_interval_unless_something_says_to_watch() {
        let now = at(10 * DAY_SECONDS);
        let off = RotationFacts {
            rotation_enabled: false,
            ..facts(10 * DAY_SECONDS, None)
        };
        assert_eq!(next_check(now, Some(&off), false, &config()), HOUR);
        assert_eq!(next_check(now, None, false, &config()), HOUR);
        assert_eq!(
            next_check(now, None, true, &config()),
            Duration::from_secs(10)
        );
        let pending = RotationFacts {
            pending_version: Some("v2".to_owned()),
            ..off
        };
        assert_eq!(
            next_check(now, Some(&pending), false, &config()),
            Duration::from_secs(10)
        );
    }
}
