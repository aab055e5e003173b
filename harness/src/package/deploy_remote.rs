//! The host's side of a deployment: the POSIX sh scripts each step runs there, and what they
//! report back.
//!
//! Every step is one command over the launcher (one session over the SSH master connection):
//! the probe, the upload (the package on stdin), the env file, stopping, switching the links,
//! starting and the health loop. Paths are quoted for the remote shell with [`quote`]; links are
//! relative (`current -> releases/NAME-VERSION`), so a service directory can be moved whole.

use std::time::Duration;

use crate::exec::{Command, LaunchError, Launcher, Output, quote};

/// The file beside a release directory (`releases/.<release>.sha256`) that records its
/// package's sha256. It lives outside the extracted tree, in a directory harness made, so
/// nothing an archive holds can stand where it is written.
fn sha_file(release_var: &str) -> String {
    format!("\"$S/releases/.{release_var}.sha256\"")
}

/// How many lines of a script's output an error shows.
const TAIL_LINES: usize = 20;

/// A service directory on a host, reached through a launcher.
pub(crate) struct Remote<'a, L> {
    pub(crate) launcher: &'a L,
    /// `<root>/<service>`.
    pub(crate) dir: String,
}

/// What the probe found in a service directory.
#[derive(Debug, Default, Clone)]
pub(crate) struct Probe {
    /// Whether the service directory exists.
    pub(crate) exists: bool,
    /// The live release (the `current` link's directory name).
    pub(crate) current: Option<String>,
    /// The release kept for rollback.
    pub(crate) previous: Option<String>,
    /// Every release directory with its recorded sha256.
    pub(crate) releases: Vec<(String, String)>,
    /// `system_requires` entries the host lacks.
    pub(crate) missing: Vec<String>,
}

impl Probe {
    /// The recorded sha256 of `release`.
    pub(crate) fn sha_of(&self, release: &str) -> Option<&str> {
        self.releases
            .iter()
            .find(|(r, _)| r == release)
            .map(|(_, s)| s.as_str())
    }
}

/// A script that ran: whether it succeeded, and the tail of what it said.
pub(crate) struct Ran {
    pub(crate) ok: bool,
    pub(crate) tail: String,
}

impl<L: Launcher> Remote<'_, L> {
    /// Runs `script` with `sh -c` where the launcher runs things.
    async fn sh(&self, script: &str) -> Result<Output, LaunchError> {
        self.launcher
            .output(&Command::new("sh").arg("-c").arg(script))
            .await
    }

    /// Runs `script` and returns whether it exited with 0, and the tail of its output (stdout
    /// then stderr).
    pub(crate) async fn run(&self, script: &str) -> Result<Ran, LaunchError> {
        let out = self.sh(script).await?;
        let mut lines: Vec<String> = out.stdout.clone();
        lines.extend(out.stderr.iter().cloned());
        let start = lines.len().saturating_sub(TAIL_LINES);
        Ok(Ran {
            ok: out.success(),
            tail: lines[start..].join("\n"),
        })
    }

    /// Reads the service directory's state and checks `requires` (paths or program names).
    /// Changes nothing.
    pub(crate) async fn probe(&self, requires: &[String]) -> Result<Probe, LaunchError> {
        let mut script = format!(
            "S={dir}\n\
             [ -d \"$S\" ] && echo exists\n\
             c=$(readlink \"$S/current\" 2>/dev/null) && echo \"current=${{c#releases/}}\"\n\
             p=$(readlink \"$S/previous\" 2>/dev/null) && echo \"previous=${{p#releases/}}\"\n\
             for d in \"$S\"/releases/*/; do\n\
             \x20 r=${{d%/}}; r=${{r##*/}}\n\
             \x20 [ -f {sum} ] || continue\n\
             \x20 echo \"release=$r $(cat {sum})\"\n\
             done\n",
            dir = quote(&self.dir),
            sum = sha_file("$r"),
        );
        for path in requires {
            script.push_str(&format!(
                "command -v {p} >/dev/null 2>&1 || [ -e {p} ] || echo missing={p}\n",
                p = quote(path)
            ));
        }
        script.push_str("exit 0\n");
        let out = self.sh(&script).await?;
        let mut probe = Probe::default();
        for line in &out.stdout {
            if line == "exists" {
                probe.exists = true;
            } else if let Some(c) = line.strip_prefix("current=") {
                probe.current = Some(c.to_string()).filter(|c| !c.is_empty());
            } else if let Some(p) = line.strip_prefix("previous=") {
                probe.previous = Some(p.to_string()).filter(|p| !p.is_empty());
            } else if let Some(r) = line.strip_prefix("release=") {
                if let Some((name, sha)) = r.split_once(' ') {
                    probe.releases.push((name.into(), sha.trim().into()));
                }
            } else if let Some(m) = line.strip_prefix("missing=") {
                probe.missing.push(m.to_string());
            }
        }
        Ok(probe)
    }

    /// The upload script: sweeps temporary directories that earlier deployments left (a lost
    /// connection), extracts the tarball on stdin into a fresh one while hashing the same
    /// bytes, checks the hash, checks that the extracted tree is the verified one (its
    /// listing's sha256 is `listing`, see [`super::listing`]), records the hash beside the
    /// release, and renames the tree into `releases/<release>`. Anything short of that removes
    /// the temporary directory. tar never restores owners or setuid bits, and a device or
    /// anything else the verified package does not hold fails the listing.
    pub(crate) fn upload_script(&self, release: &str, sha256: &str, listing: &str) -> String {
        format!(
            "set -eu\n\
             umask 022\n\
             S={dir}\n\
             rel={rel}\n\
             want={sha}\n\
             wantl={listing}\n\
             mkdir -p \"$S/releases\"\n\
             for d in \"$S\"/.incoming-*; do [ -e \"$d\" ] && rm -rf \"$d\"; done\n\
             t=$(mktemp -d \"$S/.incoming-XXXXXX\")\n\
             trap 'rm -rf \"$t\"' EXIT\n\
             trap 'exit 1' HUP INT TERM PIPE\n\
             mkdir \"$t/pkg\"\n\
             mkfifo \"$t/fifo\"\n\
             sha256sum <\"$t/fifo\" >\"$t/sum\" &\n\
             h=$!\n\
             tee \"$t/fifo\" | tar -xzf - -C \"$t/pkg\" --no-same-owner --no-same-permissions\n\
             wait \"$h\"\n\
             got=$(cut -d' ' -f1 \"$t/sum\")\n\
             if [ \"$got\" != \"$want\" ]; then\n\
             \x20 echo \"the host received a package with sha256 $got, not $want: the transfer was cut short or altered\" >&2\n\
             \x20 exit 1\n\
             fi\n\
             {check}\
             printf '%s\\n' \"$want\" >\"$t/sum\"\n\
             rm -rf \"$S/releases/$rel\"\n\
             mv \"$t/pkg\" \"$S/releases/$rel\"\n\
             mv -f \"$t/sum\" {sum}\n",
            dir = quote(&self.dir),
            rel = quote(release),
            sha = quote(sha256),
            listing = quote(listing),
            check = super::listing::host_check(),
            sum = sha_file("$rel"),
        )
    }

    /// Writes the env file for the next start as `.env.next` (mode 0600, whole or not at
    /// all); [`Remote::switch`] puts it in place.
    pub(crate) async fn write_env(&self, text: &str) -> Result<Ran, LaunchError> {
        self.run(&format!(
            "set -eu\n\
             S={dir}\n\
             umask 077\n\
             printf '%s' {text} >\"$S/.env.next.tmp\"\n\
             mv -f \"$S/.env.next.tmp\" \"$S/.env.next\"\n",
            dir = quote(&self.dir),
            text = quote(text)
        ))
        .await
    }

    /// Makes `current` point at `current`, `previous` at `previous` (or removes it), each by
    /// renaming a new link over the old one, so a reader sees one or the other. The env file
    /// moves too: `Next` puts `.env.next` in place, keeps the old one as `.env.previous` and
    /// the one before as `.env.saved` (until [`Remote::prune`]); `Back` undoes that.
    pub(crate) async fn switch(
        &self,
        current: Option<&str>,
        previous: Option<&str>,
        env: EnvMove,
    ) -> Result<Ran, LaunchError> {
        let link = |name: &str, target: Option<&str>| match target {
            Some(t) => format!(
                "ln -sfn {target} \"$S/.{name}.tmp\" && mv -Tf \"$S/.{name}.tmp\" \"$S/{name}\"\n",
                target = quote(&format!("releases/{t}"))
            ),
            None => format!("rm -f \"$S/{name}\"\n"),
        };
        let env = match env {
            EnvMove::Next => {
                "if [ -f \"$S/.env.next\" ]; then\n\
                 \x20 rm -f \"$S/.env.saved\"\n\
                 \x20 if [ -f \"$S/.env.previous\" ]; then mv -f \"$S/.env.previous\" \"$S/.env.saved\"; fi\n\
                 \x20 if [ -f \"$S/env\" ]; then cp -p \"$S/env\" \"$S/.env.previous\"; fi\n\
                 \x20 mv -f \"$S/.env.next\" \"$S/env\"\n\
                 fi\n"
            }
            EnvMove::Back => {
                "rm -f \"$S/.env.next\"\n\
                 if [ -f \"$S/.env.previous\" ]; then mv -f \"$S/.env.previous\" \"$S/env\"; fi\n\
                 if [ -f \"$S/.env.saved\" ]; then mv -f \"$S/.env.saved\" \"$S/.env.previous\"; fi\n"
            }
        };
        self.run(&format!(
            "set -eu\nS={dir}\n{cur}{prev}{env}",
            dir = quote(&self.dir),
            cur = link("current", current),
            prev = link("previous", previous),
        ))
        .await
    }

    /// Runs `release`'s `scripts/<script>` as the package format says (`start.sh WORK_DIR
    /// ENV_FILE`, `stop.sh WORK_DIR`) from its work dir, with the env file sourced, its output
    /// kept in `WORK_DIR/.harness-<script>.log` (so a service it leaves in the background holds
    /// a file, not the session's pipes), at most `limit` long where `timeout` exists.
    pub(crate) async fn script(
        &self,
        release: &str,
        script: &str,
        limit: Duration,
    ) -> Result<Ran, LaunchError> {
        let args = if script == super::START_SCRIPT {
            "\"$W\" \"$S/env\""
        } else {
            "\"$W\""
        };
        let name = script.rsplit('/').next().unwrap_or(script);
        self.run(&format!(
            "S={dir}\n\
             W=\"$S/releases/\"{rel}\n\
             cd \"$W\" || exit 1\n\
             log=\"$W/.harness-{name}.log\"\n\
             t=; command -v timeout >/dev/null 2>&1 && t=\"timeout {secs}\"\n\
             $t sh -c '[ -f \"$1\" ] && . \"$1\"; shift; exec \"$@\"' sh \"$S/env\" \"$W/{script}\" {args} </dev/null >\"$log\" 2>&1\n\
             rc=$?\n\
             tail -n {TAIL_LINES} \"$log\"\n\
             [ $rc -eq 124 ] && [ -n \"$t\" ] && echo \"{name} did not finish within {secs} s\"\n\
             exit $rc\n",
            dir = quote(&self.dir),
            rel = quote(release),
            secs = limit.as_secs().max(1),
        ))
        .await
    }

    /// Polls `release`'s `health.sh WORK_DIR` (env file sourced) every 200 ms until it exits
    /// with 0, or fails with its last output after `limit`. The loop runs on the host: one
    /// session, however many polls. A release without `health.sh` counts as healthy once
    /// `start.sh` succeeded.
    pub(crate) async fn wait_healthy(
        &self,
        release: &str,
        limit: Duration,
    ) -> Result<Ran, LaunchError> {
        self.run(&format!(
            "S={dir}\n\
             W=\"$S/releases/\"{rel}\n\
             h=\"$W/{health}\"\n\
             [ -f \"$h\" ] || {{ echo 'no health.sh: healthy once started'; exit 0; }}\n\
             end=$(( $(date +%s) + {secs} ))\n\
             n=0\n\
             while :; do\n\
             \x20 n=$((n + 1))\n\
             \x20 if (cd \"$W\" && sh -c '[ -f \"$1\" ] && . \"$1\"; shift; exec \"$@\"' sh \"$S/env\" \"$h\" \"$W\") </dev/null >\"$W/.harness-health.log\" 2>&1; then\n\
             \x20   echo \"healthy after $n checks\"; exit 0\n\
             \x20 fi\n\
             \x20 if [ \"$(date +%s)\" -ge \"$end\" ]; then\n\
             \x20   echo \"health.sh did not succeed in {secs} s ($n checks); its last output:\"\n\
             \x20   tail -n {TAIL_LINES} \"$W/.harness-health.log\"; exit 1\n\
             \x20 fi\n\
             \x20 sleep 0.2\n\
             done\n",
            dir = quote(&self.dir),
            rel = quote(release),
            health = super::HEALTH_SCRIPT,
            secs = limit.as_secs().max(1),
        ))
        .await
    }

    /// Removes release directories other than `keep`, the `.incoming-*` leftovers and, with
    /// `all`, the whole service directory.
    pub(crate) async fn prune(&self, keep: &[&str], all: bool) -> Result<Ran, LaunchError> {
        if all {
            return self.run(&format!("rm -rf -- {}", quote(&self.dir))).await;
        }
        let mut case = String::new();
        for k in keep {
            case.push_str(&format!("{}) continue ;; ", quote(k)));
        }
        self.run(&format!(
            "S={dir}\n\
             for d in \"$S\"/releases/*/; do\n\
             \x20 [ -d \"$d\" ] || continue\n\
             \x20 r=${{d%/}}; r=${{r##*/}}\n\
             \x20 case \"$r\" in {case}esac\n\
             \x20 rm -rf -- \"$S/releases/$r\" {sum}\n\
             done\n\
             rm -f \"$S/.env.saved\"\n\
             exit 0\n",
            dir = quote(&self.dir),
            sum = sha_file("$r"),
        ))
        .await
    }
}

/// What [`Remote::switch`] does with the env file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnvMove {
    /// Put `.env.next` in place, keeping the old one as `.env.previous`.
    Next,
    /// Put `.env.previous` back.
    Back,
}
