//! A tool of the workspace: answers each line it is sent with `greeter: LINE`, on the port
//! harness gives it in `PORT`, and `where` with its own path.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = std::env::var("PORT")
        .expect("PORT")
        .parse()
        .expect("PORT is a number");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut writer = stream.try_clone().expect("clone the stream");
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let answer = match line.as_str() {
                    "where" => std::env::current_exe().expect("its path").display().to_string(),
                    _ => format!("greeter: {line}"),
                };
                if writeln!(writer, "{answer}").is_err() {
                    break;
                }
            }
        });
    }
}
