//! The suite of the user's crate: tokio-based clients with a plain `.await`.

use harness::{Service, harness_test};
use redis::AsyncCommands;

#[harness_test(topology = "topologies/redis.yaml")]
async fn set_then_get(redis: Service) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(redis.url("redis"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let () = connection.set("greeting", "hello").await?;
    let value: String = connection.get("greeting").await?;
    assert_eq!(value, "hello");
    Ok(())
}

#[harness_test(topology = "topologies/redis.yaml")]
async fn tokio_net_connects(redis: Service) -> std::io::Result<()> {
    tokio::net::TcpStream::connect(redis.addr()).await?;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    Ok(())
}

/// The line the crate's program answers `question` with.
async fn ask(app: &Service, question: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(app.addr()).await?;
    stream.write_all(format!("{question}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    Ok(line)
}

#[harness_test(topology = "topologies/app.yaml")]
async fn the_crates_own_binary_answers(app: Service, greeter: Service) -> std::io::Result<()> {
    assert_eq!(ask(&app, "hello").await?, "kvapp: hello\n");
    assert_eq!(ask(&greeter, "hello").await?, "greeter: hello\n");
    let port = app.addr().port();
    assert_eq!(
        ask(&app, "greeting").await?,
        format!("hello from port {port}\n")
    );
    Ok(())
}

/// The binaries that run are the ones this run's tests run with: cargo's, or nextest's where
/// it unpacked an archive; the other package's beside the test binaries, where cargo builds it
/// and where the archive carries it (`.config/nextest.toml`).
#[harness_test(topology = "topologies/app.yaml")]
async fn the_binary_is_the_one_this_run_built(app: Service, greeter: Service) -> std::io::Result<()> {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).unwrap();
    let line = ask(&app, "where").await?;
    let expected = std::env::var("NEXTEST_BIN_EXE_kvapp")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kvapp").to_string());
    assert_eq!(canonical(line.trim().as_ref()), canonical(expected.as_ref()));
    let line = ask(&greeter, "where").await?;
    let test_binary = std::env::current_exe()?;
    let profile_dir = test_binary.parent().and_then(|deps| deps.parent()).unwrap();
    assert_eq!(canonical(line.trim().as_ref()), canonical(&profile_dir.join("greeter")));
    Ok(())
}

/// What a passing test prints is not shown, unless `--nocapture` or `--show-output`.
#[harness_test(topology = "topologies/redis.yaml")]
async fn prints_while_it_passes(redis: Service) {
    println!("USER-PASSING-OUTPUT from a test of {}", redis.name());
    eprintln!("USER-PASSING-STDERR");
}

/// Fails when the crate's author asks it to (`USER_CRATE_FAIL=1`): its output is shown with
/// its failure.
#[harness_test(topology = "topologies/redis.yaml")]
async fn fails_when_asked(redis: Service) {
    println!("USER-FAILING-OUTPUT before the check");
    if std::env::var_os("USER_CRATE_FAIL").is_some() {
        panic!("USER-FAILING-PANIC: asked to fail after reaching {}", redis.addr());
    }
}

harness::main!(runtime = "tokio");
