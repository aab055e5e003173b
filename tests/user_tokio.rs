//! A suite whose bodies run on tokio (`harness::main!(runtime = "tokio")`, the `tokio` feature):
//! redis's tokio-based async client and `tokio::net` against a real redis-server, a test that
//! opts out with `runtime = "none"`, and one on a multi-thread runtime.

use harness::{Service, harness_test};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[harness_test(topology = "tests/user_tokio/redis.yaml")]
async fn the_async_client_of_redis_works_with_a_plain_await(
    redis: Service,
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(redis.url("redis"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let () = connection.set("greeting", "hello from tokio").await?;
    let value: String = connection.get("greeting").await?;
    assert_eq!(value, "hello from tokio");
    // tokio's own timers need its time driver.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    Ok(())
}

#[harness_test(topology = "tests/user_tokio/redis.yaml")]
async fn tokio_net_reaches_the_service(redis: Service) -> std::io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(redis.addr()).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await?;
    assert_eq!(&reply, b"+PONG\r\n");
    Ok(())
}

#[harness_test(topology = "tests/user_tokio/redis.yaml", runtime = "none")]
async fn a_test_can_run_without_the_suites_runtime(redis: Service) {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "runtime = \"none\" runs the body outside tokio"
    );
    // The smol family's I/O needs no runtime.
    let stream = async_net::TcpStream::connect(redis.addr()).await.unwrap();
    drop(stream);
}

#[harness_test(
    topology = "tests/user_tokio/redis.yaml",
    runtime = "tokio-multi-thread"
)]
async fn a_multi_thread_runtime_allows_block_in_place(redis: Service) {
    let addr = redis.addr();
    let connected = tokio::task::block_in_place(|| std::net::TcpStream::connect(addr).is_ok());
    assert!(connected);
    let spawned = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await.is_ok() });
    assert!(spawned.await.unwrap());
}

harness::main!(runtime = "tokio");
