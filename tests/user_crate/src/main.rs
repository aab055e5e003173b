//! The crate's own program; its suites test it against real servers.

fn main() {
    println!("kvapp");
}
