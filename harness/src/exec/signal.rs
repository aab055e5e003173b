//! Signals a process handle can send, named so remote launchers can spell them for `kill`.

/// A signal to deliver to a process (and its process group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGTERM`: ask to stop.
    Terminate,
    /// `SIGKILL`: stop now.
    Kill,
    /// `SIGINT`: what Ctrl-C sends.
    Interrupt,
    /// `SIGHUP`: by convention, reload configuration.
    Reload,
    /// `SIGUSR1`.
    User1,
    /// `SIGUSR2`.
    User2,
    /// `SIGQUIT`: by convention, stop gracefully (nginx) or dump state (the JVM).
    Quit,
}

impl Signal {
    /// The name `kill -s` understands (`TERM`, `KILL`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "TERM",
            Signal::Kill => "KILL",
            Signal::Interrupt => "INT",
            Signal::Reload => "HUP",
            Signal::User1 => "USR1",
            Signal::User2 => "USR2",
            Signal::Quit => "QUIT",
        }
    }

    /// The signal number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Terminate => 15,
            Signal::Kill => 9,
            Signal::Interrupt => 2,
            Signal::Reload => 1,
            Signal::User1 => 10,
            Signal::User2 => 12,
            Signal::Quit => 3,
        }
    }

    pub(crate) fn to_rustix(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Signal::Terminate => S::TERM,
            Signal::Kill => S::KILL,
            Signal::Interrupt => S::INT,
            Signal::Reload => S::HUP,
            Signal::User1 => S::USR1,
            Signal::User2 => S::USR2,
            Signal::Quit => S::QUIT,
        }
    }
}

impl From<crate::topology::StopSignal> for Signal {
    fn from(signal: crate::topology::StopSignal) -> Self {
        use crate::topology::StopSignal as S;
        match signal {
            S::Term => Signal::Terminate,
            S::Int => Signal::Interrupt,
            S::Quit => Signal::Quit,
            S::Hup => Signal::Reload,
            S::Usr1 => Signal::User1,
            S::Usr2 => Signal::User2,
            S::Kill => Signal::Kill,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}
