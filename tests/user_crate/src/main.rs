//! The crate's own program: answers each line it is sent with `kvapp: LINE`, on the port harness
//! gives it in `PORT`, `where` with its own path, and `greeting` with the file its topology
//! put at `KVAPP_GREETING`. Its suite starts it through
//! `${cargo_bin:kvapp}`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = std::env::var("PORT")
        .expect("PORT")
        .parse()
        .expect("PORT is a number");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("kvapp listening on {}", listener.local_addr().expect("an address"));
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut writer = stream.try_clone().expect("clone the stream");
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let answer = match line.as_str() {
                    "where" => std::env::current_exe().expect("its path").display().to_string(),
                    "greeting" => greeting(),
                    _ => format!("kvapp: {line}"),
                };
                if writeln!(writer, "{answer}").is_err() {
                    break;
                }
            }
        });
    }
}

/// The text of the file at `KVAPP_GREETING`, or why there is none.
fn greeting() -> String {
    let Ok(path) = std::env::var("KVAPP_GREETING") else {
        return "no KVAPP_GREETING".to_string();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_string(),
        Err(e) => format!("read {path}: {e}"),
    }
}
