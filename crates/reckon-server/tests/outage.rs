//! When PostgreSQL goes away, Reckon answers 503 `unavailable` (which
//! clients and the metering middleware treat as "try again"), changes
//! nothing, and recovers by itself when the database is back.
//!
//! The outage is real: the server reaches PostgreSQL through a TCP relay
//! in this test, and the test cuts every connection through it. Skipped
//! (with the reason printed) without a PostgreSQL server, except under
//! `CI=true`.

mod support;

use reckon_server::config::Database;
use reqwest::Method;
use serde_json::json;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `target` while `up` is true; when it turns
/// false, cuts every open connection and refuses new ones.
async fn relay(target: String, up: watch::Receiver<bool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            if !*up.borrow() {
                continue; // dropped: refused
            }
            let target = target.clone();
            let mut up = up.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = up.wait_for(|up| !*up) => {} // cut
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_database_outage_is_503_and_heals() {
    let Some(schema) = reckon_store::postgres::scratch::ScratchSchema::for_tests(
        "a_database_outage_is_503_and_heals",
    )
    .await
    else {
        return;
    };
    // The scratch URL names 127.0.0.1:5432 (or RECKON_TEST_POSTGRES_URL's
    // host); send the server through the relay instead.
    let url = schema.url.clone();
    let rest = url.split_once("://").unwrap().1;
    let (userinfo, after) = rest.split_once('@').unwrap_or(("", rest));
    let (hostport, path) = after.split_once('/').unwrap();
    let (up_tx, up_rx) = watch::channel(true);
    let port = relay(hostport.to_owned(), up_rx).await;
    let at = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    let relayed = format!("postgres://{at}127.0.0.1:{port}/{path}");
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(
        dir,
        None,
        config(Database::parse(&relayed).unwrap(), vec![ADMIN.into()]),
    )
    .await;
    app.create_account("a").await;
    app.grant("a", json!(10)).await;

    up_tx.send(false).unwrap(); // the database is gone
    let usage = |key: &'static str| {
        app.service(Method::POST, "/v1/accounts/a/usage")
            .header("Idempotency-Key", key)
            .json(&json!({"amount": 1}))
    };
    let r = usage("u1").send().await.unwrap();
    assert_eq!(error_code(r).await, (503, "unavailable".into()));
    let r = app
        .service(Method::GET, "/v1/accounts/a")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (503, "unavailable".into()));

    up_tx.send(true).unwrap(); // back
                               // The pool replaces its cut connections; the retry applies once.
    let mut status = 0;
    for _ in 0..50 {
        status = usage("u1").send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(app.available("a").await, "9");
    let r = usage("u1").send().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(app.available("a").await, "9", "the retry applied once");
    app.stop().await;
    drop(schema);
}
