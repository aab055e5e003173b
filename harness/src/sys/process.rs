//! Process identity and liveness from `/proc/PID/stat`.

use std::fmt;

/// A process as it can be told apart from any later process that reuses its pid: its pid and
/// its start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// When it started, in clock ticks since boot.
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of the live process `pid`; `None` if there is none, or only its zombie.
    pub fn of(pid: u32) -> Option<ProcessIdentity> {
        start_time(pid).map(|start_time| ProcessIdentity { pid, start_time })
    }

    /// An identity written down as its two numbers (in a file naming an owner); `None` if
    /// either is no number.
    pub fn parse(pid: &str, start_time: &str) -> Option<ProcessIdentity> {
        Some(ProcessIdentity {
            pid: pid.trim().parse().ok()?,
            start_time: start_time.trim().parse().ok()?,
        })
    }

    /// This process's identity.
    pub fn current() -> Option<ProcessIdentity> {
        ProcessIdentity::of(std::process::id())
    }

    /// Whether this very process still runs: its pid is alive and started at the same time
    /// (so a recycled pid does not count).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// `PID (started at TICKS)`.
impl fmt::Display for ProcessIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (started at tick {})", self.pid, self.start_time)
    }
}

/// The start time of the live process `pid` in clock ticks since boot; `None` if there is no
/// such process or only its zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let (state, start) = stat(pid)?;
    (!finished(&state)).then_some(start?)
}

/// Whether `pid` is a live process (a zombie has finished).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !finished(&state))
}

fn finished(state: &str) -> bool {
    state == "Z" || state == "X"
}

/// The state (field 3) and the start time (field 22) of `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(String, Option<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the fields are counted from
    // its closing parenthesis, the last one on the line.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.to_owned();
    // Field 3 was the state; field 22 is 19 further on.
    let start = fields.nth(18).and_then(|s| s.parse().ok());
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = ProcessIdentity::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        assert!(alive(me.pid));
        // Our pid with another start time is a process that reused it: not us.
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
        // Above the kernel's largest pid (2^22): no such process.
        let made_up = ProcessIdentity {
            pid: 2_147_483_646,
            start_time: 1,
        };
        assert!(!made_up.is_alive());
        assert!(!alive(made_up.pid));
        assert_eq!(ProcessIdentity::of(made_up.pid), None);
        assert_eq!(ProcessIdentity::parse(" 2147483646", "1\n"), Some(made_up));
        assert_eq!(ProcessIdentity::parse("12", "x"), None);
    }

    #[test]
    fn a_process_that_ended_is_gone_even_as_a_zombie() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let identity = ProcessIdentity::of(child.id()).unwrap();
        assert!(identity.is_alive());
        child.kill().unwrap();
        // Not waited for yet: only its zombie is left, which is not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while identity.is_alive() {
            assert!(
                std::time::Instant::now() < deadline,
                "{identity} still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(identity.pid));
        child.wait().unwrap();
        assert_eq!(start_time(identity.pid), None);
    }
}
