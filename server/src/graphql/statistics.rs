//! The counts of the moment as a query, for a dashboard's first paint; the `feed` subscription
//! brings them again as they change.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{error::GqlResult, guard::Allow, services_of};
use crate::domain::{access::Permission, statistics::Statistics};

/// Counts of the moment. Later issues add their own (programs, campaigns).
#[derive(SimpleObject, Clone)]
#[graphql(name = "Statistics")]
pub struct StatisticsNode {
    taken_at: DateTime<Utc>,
    contacts: u64,
    imports_running: u64,
    /// Mail queued or deferred, not sent yet.
    mail_waiting: u64,
    webhook_deliveries_pending: u64,
    /// Deliveries whose whole retry schedule failed: replay them once the receiver is fixed.
    webhook_deliveries_failed: u64,
    /// Endpoints switched off after failing every attempt of a delivery, until enabled again.
    webhook_endpoints_disabled: u64,
}

impl From<&Statistics> for StatisticsNode {
    fn from(statistics: &Statistics) -> Self {
        Self {
            taken_at: statistics.taken_at,
            contacts: statistics.contacts,
            imports_running: statistics.imports_running,
            mail_waiting: statistics.mail_waiting,
            webhook_deliveries_pending: statistics.webhook_deliveries_pending,
            webhook_deliveries_failed: statistics.webhook_deliveries_failed,
            webhook_endpoints_disabled: statistics.webhook_endpoints_disabled,
        }
    }
}

#[derive(Default)]
pub struct StatisticsQuery;

#[Object]
impl StatisticsQuery {
    /// The counts of the moment.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn statistics(&self, ctx: &Context<'_>) -> GqlResult<StatisticsNode> {
        Ok(StatisticsNode::from(&services_of(ctx)?.statistics().await?))
    }
}
