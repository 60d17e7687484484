//! Liveness and readiness for orchestrators and load balancers: `/healthz` answers while the
//! process lives; `/readyz` only while the database answers, and says how each dependency is.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database_up = state.services.database_answers().await;
    if !database_up {
        tracing::warn!("readiness: the database does not answer");
    }
    let database = json!({ "status": if database_up { "up" } else { "down" } });
    let smtp = if state.smtp_configured {
        json!({ "status": "configured" })
    } else {
        json!({ "status": "not_configured", "detail": "mail is queued, not sent: set RAPPORT_SMTP_URL" })
    };
    // Reported, not required: a broker outage delays events but leaves the API serving, and the
    // consumer catches up from its durable position when the broker is back.
    let nats = match &state.stream_status {
        Some(status) => {
            let status = status.borrow().clone();
            json!({
                "status": status.state.as_str(),
                "stored": status.stored,
                "duplicates": status.duplicates,
                "skipped": status.skipped,
            })
        }
        None => json!({ "status": "not_configured" }),
    };
    let status = if database_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if database_up { "ready" } else { "unavailable" },
        "checks": { "database": database, "smtp": smtp, "nats": nats },
    });
    (status, Json(body))
}
