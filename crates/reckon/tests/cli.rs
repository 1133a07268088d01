//! What an operator sees when `reckon serve` cannot start.

use std::process::Command;

/// A database a newer reckon migrated: one clear line on stderr (the cause
/// not repeated), a failing exit code, and no "listening" line, which
/// scripts wait for and would take for a server that is up.
#[test]
fn a_database_from_a_newer_reckon_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reckon.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite:{}", path.display()))
        .env("RECKON_ADMIN_KEY", "cli-admin")
        .env("RECKON_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    assert!(
        stderr.starts_with(
            "error: could not open the database: database schema version 999 is newer than this reckon ("
        ),
        "{stderr}"
    );
    assert!(stderr.ends_with("); upgrade reckon"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("newer than").count(), 1, "{stderr}");
}
