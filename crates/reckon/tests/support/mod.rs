//! Real `reckon serve` processes for the binary's tests.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `reckon serve`, killed with SIGKILL when dropped (nothing is
/// checkpointed or closed on the way out).
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `reckon serve` on `database` with `env` set, and returns once it
/// listens and has printed a line containing each of `wait_for`. Its output
/// is drained for its whole life, so it never blocks on a full pipe; its
/// stderr is echoed to the test's, which shows it when the test fails.
pub fn serve(database: &str, env: &[(&str, &str)], wait_for: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reckon serve");
    let (lines, seen) = mpsc::channel();
    let outputs: [(Box<dyn Read + Send>, bool); 2] = [
        (Box::new(child.stdout.take().unwrap()), false),
        (Box::new(child.stderr.take().unwrap()), true),
    ];
    for (output, echo) in outputs {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("reckon serve: {line}");
                }
                let _ = lines.send(line);
            }
        });
    }
    let mut base = None;
    let mut waiting: Vec<&str> = wait_for.to_vec();
    while base.is_none() || !waiting.is_empty() {
        let line = seen
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("reckon serve did not listen and print {waiting:?} within 30 s")
            });
        if let Some(addr) = line.strip_prefix("reckon listening on ") {
            base = Some(addr.trim().to_owned());
        }
        waiting.retain(|text| !line.contains(text));
    }
    Server {
        child,
        base: base.unwrap(),
    }
}
