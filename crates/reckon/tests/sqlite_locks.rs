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

mod support;

const ADMIN: &str = "locks-admin";

/// Starts `reckon serve` and returns once it listens and has read its file
/// into the page cache (the step that opens the file outside SQLite).
fn start(database: &str) -> support::Server {
    let env = [("RECKON_ADMIN_KEY", ADMIN), ("RECKON_LOG", "info")];
    support::serve(database, &env, &["into the OS page cache"])
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
