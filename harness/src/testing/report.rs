//! A failed test's message: why it failed, then the tail of each service's output.

use std::any::Any;

use crate::orchestrator::FAILURE_TAIL;

use super::topology::Topology;

/// The message a panic carried.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

/// `message`, then the last lines of every service of `topology`.
pub(crate) fn with_log_tails(message: String, topology: &Topology) -> String {
    let mut out = message;
    out.push_str(&format!(
        "\n\nlast lines of each service of {}:",
        topology.file().display()
    ));
    for service in topology.services() {
        let lines = service.logs();
        let shown = &lines[lines.len().saturating_sub(FAILURE_TAIL)..];
        if shown.is_empty() {
            out.push_str(&format!("\n  {}: (no output)", service.name()));
            continue;
        }
        out.push_str(&format!("\n  {}:", service.name()));
        for line in shown {
            out.push_str("\n    | ");
            out.push_str(&line.text);
        }
    }
    out
}
