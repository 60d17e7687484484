//! The counts behind the live statistics feed. Each is one indexed count: by status on
//! deliveries, mail and imports, and the whole contact table, whose count an index scan answers.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::{
    StoreResult,
    entity::{contact, import, outbox, webhook_delivery, webhook_endpoint},
};
use crate::domain::{
    delivery::SendStatus, import::ImportStatus, statistics::Statistics, webhook::WebhookDeliveryStatus,
};

pub async fn snapshot(conn: &impl ConnectionTrait, taken_at: DateTime<Utc>) -> StoreResult<Statistics> {
    let deliveries = |status: WebhookDeliveryStatus| {
        webhook_delivery::Entity::find().filter(webhook_delivery::Column::Status.eq(status.as_str())).count(conn)
    };
    let waiting = [SendStatus::Queued, SendStatus::Deferred].map(SendStatus::as_str);
    Ok(Statistics {
        taken_at,
        contacts: contact::Entity::find().count(conn).await?,
        imports_running: import::Entity::find()
            .filter(import::Column::Status.eq(ImportStatus::Running.as_str()))
            .count(conn)
            .await?,
        mail_waiting: outbox::Entity::find().filter(outbox::Column::Status.is_in(waiting)).count(conn).await?,
        webhook_deliveries_pending: deliveries(WebhookDeliveryStatus::Pending).await?,
        webhook_deliveries_failed: deliveries(WebhookDeliveryStatus::Failed).await?,
        webhook_endpoints_disabled: webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Enabled.eq(false))
            .count(conn)
            .await?,
    })
}
