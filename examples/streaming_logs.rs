//! Stream a process's output line by line, as it is written.
//!
//! ```text
//! cargo run --example streaming_logs
//! ```
//!
//! A small service-like script starts, logs requests over a couple of seconds (warnings on
//! stderr), and shuts down. Each line is printed the moment it arrives, with the time since
//! start and the stream it came from, then the exit status. Set `NO_COLOR` to turn colours off.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use harness::exec::{Command, Executor, ProcessEvent};

/// The process we watch: a stand-in for a service writing its log.
const SERVICE: &str = r#"
echo "starting demo-service v0.1.0"
sleep 0.3
echo "listening on 127.0.0.1:8080"
for i in 1 2 3 4 5 6; do
  sleep 0.25
  echo "GET /items/$i -> 200 ($((i * 7 % 23 + 2)) ms)"
  if [ "$i" -eq 4 ]; then sleep 0.05; echo "warning: slow disk, flush took 180 ms" >&2; fi
done
sleep 0.2
echo "received shutdown request, draining 2 connections"
sleep 0.1
echo "shutdown complete" >&2
exit 0
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let style = Style::detect();
    smol::block_on(async {
        let executor = Executor::local("demo-service");
        let start = Instant::now();
        let mut run = executor
            .execute(Command::new("sh").arg("-c").arg(SERVICE))
            .await?;

        // Events arrive as the process writes: nothing here waits for it to finish.
        while let Some(event) = run.events.recv().await {
            let at = style.dim(&format!("[{}]", elapsed(start.elapsed())));
            match event {
                ProcessEvent::Started { pid } => {
                    println!("{at} {} pid {pid}", style.bold("started"));
                }
                ProcessEvent::Stdout(line) => println!("{at} {} {line}", style.green("stdout |")),
                ProcessEvent::Stderr(line) => println!("{at} {} {line}", style.red("stderr |")),
                ProcessEvent::Exited(status) => {
                    let verdict = if status.success() {
                        style.green(&status.to_string())
                    } else {
                        style.red(&status.to_string())
                    };
                    println!("{at} {} ({verdict})", style.bold("exited"));
                }
            }
        }
        Ok(())
    })
}

/// `  +1.234s`, right-aligned so the lines stay in columns.
fn elapsed(d: Duration) -> String {
    format!("{:>8}", format!("+{:.3}s", d.as_secs_f64()))
}

/// ANSI colours when printing to a terminal that wants them.
struct Style {
    on: bool,
}

impl Style {
    fn detect() -> Self {
        Style {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
}
