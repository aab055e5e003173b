//! The crate's container suite: redis in a container harness builds, and in the crate's compose
//! file, both reached with redis's tokio client.

use harness::{Service, harness_test};
use redis::AsyncCommands;

/// Sets and reads back a key on `service`, through the tokio client.
async fn round_trip(service: &Service, value: &str) -> Result<String, redis::RedisError> {
    let client = redis::Client::open(service.url("redis"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let () = connection.set("who", value).await?;
    connection.get("who").await
}

#[harness_test(topology = "topologies/containers.yaml")]
async fn redis_in_a_container_and_in_a_compose_project(
    cache: Service,
    queue: Service,
) -> Result<(), redis::RedisError> {
    assert_eq!(round_trip(&cache, "cache").await?, "cache");
    assert_eq!(round_trip(&queue, "queue").await?, "queue");
    Ok(())
}

harness::main!(runtime = "tokio");
