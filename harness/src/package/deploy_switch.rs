//! Making a release live: stop the old one, switch the links, start the new one, wait until it
//! is healthy, and undo all of it when a step fails.

use std::time::Duration;

use crate::exec::{LaunchError, Launcher};

use super::deploy::Stage;
use super::deploy_error::DeployError;
use super::deploy_remote::{EnvMove, Ran, Remote};
use super::rules::{START_SCRIPT, STOP_SCRIPT};

/// Time limits of the scripts.
pub(crate) struct Limits {
    pub(crate) script: Duration,
    pub(crate) health: Duration,
}

/// A switch from `old` to `new`, and what undoing it needs.
pub(crate) struct Activation<'a> {
    pub(crate) new: &'a str,
    pub(crate) old: Option<&'a str>,
    /// Where `previous` pointed before.
    pub(crate) previous_before: Option<&'a str>,
    /// Whether a failed `new` is removed (it was sent for this deployment).
    pub(crate) remove_new_on_failure: bool,
    /// Whether the service directory existed before (if not, a failure removes it).
    pub(crate) existed: bool,
    /// What happens to the env file at the switch.
    pub(crate) env: EnvMove,
}

/// Stop `old`, switch `current` to `new` (and `previous` to `old`), start `new`, wait until
/// healthy. If `old` does not stop, or `new` does not start or become healthy: stop `new`,
/// switch back, start `old` and check its health, and report what failed.
pub(crate) async fn activate<L: Launcher>(
    remote: &Remote<'_, L>,
    a: &Activation<'_>,
    limits: &Limits,
    report: &(dyn Fn(Stage, String) + Sync),
    host: &str,
) -> Result<(), DeployError> {
    let failed = |step: &'static str, output: String, started: bool, switched: bool| Failure {
        step,
        output,
        started,
        switched,
    };
    let result: Result<(), Failure> = async {
        if let Some(old) = a.old {
            report(Stage::Stop, format!("stopping {old}"));
            let stop = remote
                .script(old, STOP_SCRIPT, limits.script)
                .await
                .map_err(|e| failed("stop.sh of the live release", e.to_string(), false, false))?;
            if !stop.ok {
                return Err(failed(
                    "stop.sh of the live release",
                    stop.tail,
                    false,
                    false,
                ));
            }
        }
        report(Stage::Switch, format!("switching current to {}", a.new));
        let switch = remote
            .switch(Some(a.new), a.old, a.env)
            .await
            .map_err(|e| failed("switch current", e.to_string(), false, true))?;
        if !switch.ok {
            return Err(failed("switch current", switch.tail, false, true));
        }
        report(Stage::Start, format!("starting {}", a.new));
        let start = remote
            .script(a.new, START_SCRIPT, limits.script)
            .await
            .map_err(|e| failed("start.sh", e.to_string(), true, true))?;
        if !start.ok {
            return Err(failed("start.sh", start.tail, true, true));
        }
        report(
            Stage::Health,
            format!("waiting for {} to become healthy", a.new),
        );
        let health = remote
            .wait_healthy(a.new, limits.health)
            .await
            .map_err(|e| failed("health.sh", e.to_string(), true, true))?;
        if !health.ok {
            return Err(failed("health.sh", health.tail, true, true));
        }
        Ok(())
    }
    .await;
    let Err(failure) = result else {
        return Ok(());
    };

    report(
        Stage::RollingBack,
        format!(
            "{} failed: restoring {}",
            failure.step,
            a.old.unwrap_or("the host")
        ),
    );
    match restore(remote, a, limits, &failure).await {
        Ok(()) => Err(DeployError::RolledBack {
            host: host.to_string(),
            release: a.new.to_string(),
            step: failure.step,
            output: indent(&failure.output),
            restored: a.old.map(str::to_string),
        }),
        Err(rollback) => Err(DeployError::RollbackFailed {
            host: host.to_string(),
            release: a.new.to_string(),
            step: failure.step,
            output: indent(&failure.output),
            rollback,
        }),
    }
}

struct Failure {
    step: &'static str,
    output: String,
    /// Whether `new`'s start.sh ran (so its stop.sh must run).
    started: bool,
    /// Whether the links may have moved.
    switched: bool,
}

/// Undoes a failed activation; the error says what could not be undone.
async fn restore<L: Launcher>(
    remote: &Remote<'_, L>,
    a: &Activation<'_>,
    limits: &Limits,
    failure: &Failure,
) -> Result<(), String> {
    let ran = |what: &str, r: Result<Ran, LaunchError>| -> Result<(), String> {
        match r {
            Ok(r) if r.ok => Ok(()),
            Ok(r) => Err(format!("{what}:\n{}", indent(&r.tail))),
            Err(e) => Err(format!("{what}: {e}")),
        }
    };
    if failure.started {
        // Its own stop.sh, to end whatever it started before failing; its failure is not ours
        // to report, the restore goes on.
        let _ = remote.script(a.new, STOP_SCRIPT, limits.script).await;
    }
    if failure.switched {
        let back = match a.env {
            EnvMove::Next => EnvMove::Back,
            EnvMove::Back => EnvMove::Next,
        };
        ran(
            "switch current back",
            remote.switch(a.old, a.previous_before, back).await,
        )?;
    } else {
        ran(
            "remove the unused env file",
            remote
                .run(&format!(
                    "rm -f {}/.env.next",
                    crate::exec::quote(&remote.dir)
                ))
                .await,
        )?;
    }
    if a.remove_new_on_failure {
        let mut keep: Vec<&str> = a.old.iter().copied().collect();
        keep.extend(a.previous_before);
        ran(
            "remove the failed release",
            remote.prune(&keep, false).await,
        )?;
    }
    match a.old {
        Some(old) => {
            ran(
                &format!("start.sh of {old}"),
                remote.script(old, START_SCRIPT, limits.script).await,
            )?;
            ran(
                &format!("health.sh of {old}"),
                remote.wait_healthy(old, limits.health).await,
            )
        }
        None if !a.existed => ran(
            "remove the service directory",
            remote.prune(&[], true).await,
        ),
        None => Ok(()),
    }
}

fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "  (no output)".to_string();
    }
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
