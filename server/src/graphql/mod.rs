//! The GraphQL schema: one query and one mutation object per feature, merged into the roots.
//! Resolvers parse their arguments into domain types and call services; they never touch the store.

pub mod access;
pub mod audit;
pub mod consents;
pub mod contacts;
pub mod emails;
pub mod error;
pub mod events;
pub mod fields;
pub mod forms;
pub mod guard;
pub mod imports;
pub mod loaders;
pub mod pagination;
pub mod preferences;
pub mod privacy;
pub mod sending;
pub mod statistics;
pub mod subscriptions;
pub mod topics;
pub mod webhooks;

use async_graphql::{Context, MergedObject, Schema};

use self::{
    error::{GqlError, GqlResult},
    loaders::Loaders,
};
use crate::service::{Error, RequestContext, Services};

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    contacts::ContactQuery,
    fields::FieldQuery,
    consents::ConsentQuery,
    topics::TopicQuery,
    audit::AuditQuery,
    access::AccessQuery,
    privacy::PrivacyQuery,
    emails::EmailQuery,
    sending::SendingQuery,
    preferences::PreferenceQuery,
    forms::FormQuery,
    webhooks::WebhookQuery,
    imports::ImportQuery,
    statistics::StatisticsQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    contacts::ContactMutation,
    fields::FieldMutation,
    consents::ConsentMutation,
    topics::TopicMutation,
    events::EventMutation,
    access::AccessMutation,
    privacy::PrivacyMutation,
    emails::EmailMutation,
    sending::SendingMutation,
    preferences::PreferenceMutation,
    forms::FormMutation,
    webhooks::WebhookMutation,
    imports::ImportMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, subscriptions::SubscriptionRoot>;

/// Deep enough for GraphiQL's introspection query, shallow enough to stop abusive nesting.
pub const MAX_DEPTH: usize = 16;
/// A page of 100 contacts with every field and their consents and topics fits comfortably;
/// nesting lists of lists does not.
pub const MAX_COMPLEXITY: usize = 10_000;

/// The schema with its limits; request data (services, request context, loaders) is added per
/// request by the HTTP layer.
pub fn build_schema(services: Option<Services>) -> AppSchema {
    let builder = Schema::build(QueryRoot::default(), MutationRoot::default(), subscriptions::SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    match services {
        Some(services) => builder.data(services).finish(),
        None => builder.finish(),
    }
}

/// The cost of a paginated list: its page size times the cost of one item.
pub fn page_cost(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let size = first.or(last).map_or(pagination::DEFAULT_PAGE_SIZE as usize, |count| count.clamp(1, 100) as usize);
    size.saturating_mul(child_complexity).saturating_add(1)
}

fn missing(what: &'static str) -> GqlError {
    Error::Internal(anyhow::anyhow!("{what} missing from the GraphQL context")).into()
}

pub(crate) fn services_of<'a>(ctx: &Context<'a>) -> GqlResult<&'a Services> {
    ctx.data::<Services>().map_err(|_| missing("services"))
}

pub(crate) fn request_of<'a>(ctx: &Context<'a>) -> GqlResult<&'a RequestContext> {
    ctx.data::<RequestContext>().map_err(|_| missing("request context"))
}

pub(crate) fn loaders_of<'a>(ctx: &Context<'a>) -> GqlResult<&'a Loaders> {
    ctx.data::<Loaders>().map_err(|_| missing("loaders"))
}
