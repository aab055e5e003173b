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

harness::main!(runtime = "tokio");
