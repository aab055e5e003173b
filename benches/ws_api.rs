//! WebSocket API figures (filled in below).

fn main() {}
