//! `SudoLauncher`: runs commands as root through `sudo -n`.
