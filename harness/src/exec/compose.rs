//! Docker Compose services as targets.
