//! The crate's job suite: a one-shot job seeds redis before the test runs.

use harness::{Service, harness_test};
use redis::AsyncCommands;

#[harness_test(topology = "topologies/jobs.yaml")]
async fn the_seed_job_ran_before_the_test(redis: Service) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(redis.url("redis"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let greeting: String = connection.get("greeting").await?;
    assert_eq!(greeting, "seeded by a job");
    Ok(())
}

harness::main!(runtime = "tokio");
