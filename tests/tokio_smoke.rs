//! The library needs no particular runtime: the same calls work under tokio, on its
//! multi-threaded and its current-thread runtime.

use std::time::Duration;

use harness::exec::{
    Command, Executor, ExitStatus, ManagedProcess, ProcessEvent, ProcessHandle, RestartPolicy,
    Signal,
};

/// Generous: the machine may be a loaded 2-core CI runner.
const DEADLINE: Duration = Duration::from_secs(60);

async fn execute_then_restart() {
    // A one-off command and its events.
    let executor = Executor::local("tokio-smoke");
    let mut result = executor
        .execute(Command::new("echo").arg("hello from tokio"))
        .await
        .unwrap();
    let pid = result.handle.id().unwrap();
    let mut seen = Vec::new();
    while let Some(event) = result.events.recv().await {
        seen.push(event);
    }
    assert_eq!(
        seen,
        [
            ProcessEvent::Started { pid },
            ProcessEvent::Stdout("hello from tokio".into()),
            ProcessEvent::Exited(ExitStatus::from_code(0)),
        ]
    );

    // A managed process, restarted by hand and automatically: the supervisor runs on its own
    // thread, so it needs nothing from tokio.
    let mut run = executor
        .execute(
            ManagedProcess::new(Command::new("sleep").arg("300"))
                .with_restart(RestartPolicy::OnFailure { max_restarts: 1 })
                .with_backoff(Duration::from_millis(10)),
        )
        .await
        .unwrap();
    let first = run.handle.pid().unwrap();
    assert_eq!(
        run.events.recv().await,
        Some(ProcessEvent::Started { pid: first })
    );
    run.handle.restart().await.unwrap();
    let second = run.handle.pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        run.events.recv().await,
        Some(ProcessEvent::Exited(ExitStatus::from_signal(15)))
    );
    assert_eq!(
        run.events.recv().await,
        Some(ProcessEvent::Started { pid: second })
    );

    run.handle.signal(Signal::Kill).await.unwrap();
    assert_eq!(
        run.events.recv().await,
        Some(ProcessEvent::Exited(ExitStatus::from_signal(9)))
    );
    let Some(ProcessEvent::Started { pid: third }) = run.events.recv().await else {
        panic!("the policy restarts a killed process");
    };
    assert_eq!(run.handle.restarts(), 2);

    let status = run.handle.stop().await.unwrap();
    assert_eq!(status, ExitStatus::from_signal(15));
    assert_eq!(run.events.recv().await, Some(ProcessEvent::Exited(status)));
    assert_eq!(run.events.recv().await, None);
    assert_eq!(run.handle.wait().await.unwrap(), status);
    for pid in [first, second, third] {
        wait_gone(pid).await;
    }
}

/// Waits until `pid` is gone (or a zombie another process must reap).
async fn wait_gone(pid: u32) {
    let start = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned));
        if matches!(state.as_deref(), None | Some("Z") | Some("X")) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_the_multi_threaded_runtime() {
    tokio::time::timeout(DEADLINE, execute_then_restart())
        .await
        .expect("finished in time");
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_the_current_thread_runtime() {
    tokio::time::timeout(DEADLINE, execute_then_restart())
        .await
        .expect("finished in time");
}
