//! A running server keeps its SQLite locks while another process uses the
//! same file.
//!
//! Closing any descriptor of a file cancels every POSIX lock the process
//! holds on it, SQLite's included (sqlite.org/howtocorrupt.html, 2.2). A
//! server that opened and closed the database file itself (to flush or
//! warm it) would lose the shared lock SQLite keeps on the file in WAL
//! mode; the next other process to close the database, the admin CLI for
//! instance, would then believe it was the last one, checkpoint and delete
//! the WAL the server is still writing, and the server's later commits
//! would go to an unlinked file. Here a real `reckon serve` warms its file
//! (`sqlite/warm.rs`), this process opens and closes the database, and the
//! server's writes must still be in the file after it is killed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ADMIN: &str = "locks-admin";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `reckon serve` and returns once it listens and has read its file
/// into the page cache (the step that opens the file outside SQLite).
fn start(database: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
        .env("RECKON_ADMIN_KEY", ADMIN)
        .env("RECKON_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reckon serve");
    let (lines, seen) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        // Keeps draining, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    let (mut base, mut warmed) = (None, false);
    while base.is_none() || !warmed {
        let line = seen
            .recv_timeout(Duration::from_secs(30))
            .expect("reckon serve did not listen and warm its file within 30 s");
        if let Some(addr) = line.strip_prefix("reckon listening on ") {
            base = Some(addr.trim().to_owned());
        }
        warmed |= line.contains("into the OS page cache");
    }
    Server {
        child,
        base: base.unwrap(),
    }
}

async fn create_account(client: &reqwest::Client, base: &str, id: &str) {
    let resp = client
        .post(format!("{base}/v1/accounts"))
        .header("X-Admin-Key", ADMIN)
        .json(&serde_json::json!({"id": id, "unit": "credits"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn another_process_closing_the_database_leaves_the_servers_wal_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reckon.db");
    let wal = dir.path().join("reckon.db-wal");
    let server = start(&format!("sqlite:{}", path.display()));
    let client = reqwest::Client::new();
    create_account(&client, &server.base, "before").await;

    // Another process (this one) opens the database, reads and closes it.
    // Were the server's locks gone, this close would checkpoint and delete
    // the server's WAL.
    let other = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    drop(other);
    assert!(
        wal.exists(),
        "another process's close deleted the server's WAL"
    );

    create_account(&client, &server.base, "after").await;
    drop(server); // SIGKILL: nothing is checkpointed on the way out

    let reopened = rusqlite::Connection::open(&path).unwrap();
    let ids: Vec<String> = reopened
        .prepare("SELECT id FROM accounts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, ["after", "before"], "an acknowledged write was lost");
}
