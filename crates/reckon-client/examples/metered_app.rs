//! An axum app whose routes are paid for with Reckon credits, like the
//! FastAPI example of the credit-locking middleware.
//!
//! ```sh
//! # a Reckon with an account "test-user-1" holding credits, then:
//! RECKON_URL=http://127.0.0.1:8080 RECKON_API_KEY=... cargo run -p reckon-client --example metered_app
//! curl -H "X-User-ID: test-user-1" http://127.0.0.1:8000/api/simple
//! curl -X POST -H "X-User-ID: test-user-1" -H 'content-type: application/json' \
//!      -d '{"size": 1000}' http://127.0.0.1:8000/api/data
//! curl -X POST -H "X-User-ID: test-user-1" "http://127.0.0.1:8000/api/process?duration_ms=500"
//! ```

use axum::extract::Query;
use axum::routing::{get, post};
use axum::{Json, Router};
use reckon_client::metering::{Cost, Meter, Metering, UserId};
use reckon_client::{amount, Client};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
struct DataRequest {
    size: usize,
}

#[derive(Deserialize)]
struct ProcessParams {
    duration_ms: Option<u64>,
}

#[tokio::main]
async fn main() {
    let url = std::env::var("RECKON_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("RECKON_API_KEY").expect("set RECKON_API_KEY to a Reckon service key");
    let metering = Metering::new(Client::new(&url, &key));
    let user = || UserId::header("x-user-id");

    let app = Router::new()
        // 1 credit, always.
        .route(
            "/api/simple",
            get(|| async { "Fixed cost endpoint" })
                .layer(metering.layer(Meter::new(user(), amount("1")))),
        )
        // Lock 5, charge 0.5 + 0.1 per KiB of response.
        .route(
            "/api/data",
            post(|Json(r): Json<DataRequest>| async move { "x".repeat(r.size) }).layer(
                metering.layer(Meter::new(user(), amount("5")).cost(Cost::ResponseSize {
                    base: amount("0.5"),
                    per_kib: amount("0.1"),
                })),
            ),
        )
        // Lock 10, charge 1 + 2 per second of processing.
        .route(
            "/api/process",
            post(|Query(p): Query<ProcessParams>| async move {
                tokio::time::sleep(Duration::from_millis(p.duration_ms.unwrap_or(100))).await;
                "done"
            })
            .layer(metering.layer(Meter::new(user(), amount("10")).cost(
                Cost::ProcessingTime {
                    base: amount("1"),
                    per_second: amount("2"),
                },
            ))),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000")
        .await
        .expect("port 8000 is free");
    println!("metered example on http://127.0.0.1:8000 (Reckon at {url})");
    axum::serve(listener, app).await.unwrap();
}
