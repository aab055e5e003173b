//! Reports about a service that is not healthy yet: what they say and how often they come.

use std::fmt;
use std::time::Duration;

use crate::exec::Command;
use crate::topology::Probe;

use super::health::ProbeContext;

/// How long a service may take to become healthy before it is reported as still waited for:
/// most services are ready within milliseconds, and a start that says nothing about them
/// stays quiet.
pub const WAIT_REPORT_AFTER: Duration = Duration::from_secs(1);

/// How often a service that is still not healthy is reported again after the first report:
/// often enough to show that the start is not stuck, rarely enough that a service that takes
/// its whole start period adds a line every few seconds, not every try.
pub const WAIT_REPORT_EVERY: Duration = Duration::from_secs(5);

/// A service that is not healthy yet, as [`Progress::StillWaiting`](super::Progress) reports
/// it. It displays as one line:
///
/// ```text
/// waiting for api-server: http GET http://127.0.0.1:4567/health, try 12 (6.0 s), last: connect to 127.0.0.1:4567: Connection refused (os error 111)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitReport {
    /// The service.
    pub service: String,
    /// What its health check tries: `tcp connect 127.0.0.1:4567`,
    /// `http GET http://127.0.0.1:4567/health`, `command pg_isready -h 127.0.0.1`,
    /// `log line matching ready`.
    pub check: String,
    /// How many times the check was tried so far.
    pub tries: u32,
    /// How long since the service was started.
    pub waited: Duration,
    /// What the last try said.
    pub last_error: String,
}

impl fmt::Display for WaitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waiting for {}: {}, try {} ({:.1} s), last: {}",
            self.service,
            self.check,
            self.tries,
            self.waited.as_secs_f64(),
            self.last_error
        )
    }
}

/// What a check tries, for [`WaitReport::check`].
pub(crate) fn describe_check(probe: &Probe, context: &ProbeContext<'_>) -> String {
    match probe {
        Probe::Tcp => match context.addr {
            Some(addr) => format!("tcp connect {addr}"),
            None => "tcp connect".to_string(),
        },
        Probe::Http { path, .. } => match context.addr {
            Some(addr) => format!("http GET http://{addr}{path}"),
            None => format!("http GET {path}"),
        },
        Probe::Command(argv) => {
            let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p, a));
            format!("command {}", Command::new(program).args(args).display())
        }
        Probe::Log(pattern) => format!("log line matching {}", pattern.as_str()),
        Probe::Docker => match context.image_test {
            Some(test) => format!(
                "the image's HEALTHCHECK {}",
                Command::new(test.first().cloned().unwrap_or_default())
                    .args(test.iter().skip(1).cloned())
                    .display()
            ),
            None => "the image's HEALTHCHECK".to_string(),
        },
    }
}

/// When the next report of one service's wait is due: at [`WAIT_REPORT_AFTER`], then every
/// [`WAIT_REPORT_EVERY`]. Reports follow tries, so a check tried rarely reports no more often
/// than it is tried; and a try that took long (a probe that waits for its timeout) makes one
/// report, not one for each period it missed.
#[derive(Debug)]
pub(crate) struct ReportSchedule {
    next: Duration,
}

impl ReportSchedule {
    pub(crate) fn new() -> Self {
        Self {
            next: WAIT_REPORT_AFTER,
        }
    }

    /// Whether a try that failed after `waited` is to be reported; if so, the next report is
    /// due one period later.
    pub(crate) fn due(&mut self, waited: Duration) -> bool {
        if waited < self.next {
            return false;
        }
        while self.next <= waited {
            self.next += WAIT_REPORT_EVERY;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_come_after_a_second_then_every_five() {
        let mut schedule = ReportSchedule::new();
        let reported: Vec<u64> = (0..=130)
            .map(|tenths| Duration::from_millis(tenths * 100))
            .filter(|&waited| schedule.due(waited))
            .map(|waited| waited.as_millis() as u64)
            .collect();
        assert_eq!(reported, [1000, 6000, 11000]);
    }

    #[test]
    fn a_long_try_makes_one_report_not_one_per_missed_period() {
        let mut schedule = ReportSchedule::new();
        assert!(!schedule.due(Duration::from_millis(999)));
        assert!(schedule.due(Duration::from_secs(30)));
        assert!(!schedule.due(Duration::from_millis(30_100)));
        assert!(schedule.due(Duration::from_secs(31)));
    }

    #[test]
    fn a_report_is_one_line_naming_the_service_the_check_and_the_try() {
        let report = WaitReport {
            service: "api-server".to_string(),
            check: "http GET http://127.0.0.1:4567/health".to_string(),
            tries: 12,
            waited: Duration::from_millis(6040),
            last_error: "connect to 127.0.0.1:4567: Connection refused (os error 111)".to_string(),
        };
        assert_eq!(
            report.to_string(),
            "waiting for api-server: http GET http://127.0.0.1:4567/health, try 12 (6.0 s), \
             last: connect to 127.0.0.1:4567: Connection refused (os error 111)"
        );
    }
}
