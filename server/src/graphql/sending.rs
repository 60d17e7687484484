//! Sending over GraphQL: one email to one contact, tests to staff addresses, the delivery log,
//! and the suppression list.

use async_graphql::{
    Context, Enum, ID, InputObject, Json, Object, SimpleObject,
    connection::{Connection, OpaqueCursor},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    access::parse_uuid,
    contacts::{ContactLookup, parse_contact_id},
    emails::EmailTypeValue,
    error::{GqlError, GqlResult, parse_arg},
    guard::Allow,
    page_cost,
    pagination::{PageArgs, connection, page_request},
    request_of, services_of,
};
use crate::{
    domain::{
        access::Permission,
        contact::EmailAddress,
        delivery::{self, Send, Suppression},
        event::EventProperties,
    },
    service::sending::{MAX_IDEMPOTENCY_KEY_CHARS, SendRequest},
    store::outbox::SendFilter,
};

/// Addresses one test may go to: tests are for the people writing the email.
const MAX_TEST_RECIPIENTS: usize = 10;

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "SendStatus", remote = "delivery::SendStatus")]
pub enum SendStatusValue {
    /// Waiting for the delivery worker.
    Queued,
    /// Accepted by the SMTP relay.
    Sent,
    /// The relay answered 4xx or could not be reached; it will be tried again (`nextAttemptAt`).
    Deferred,
    /// The relay refused it for good (5xx); `detail` has its answer.
    Bounced,
    /// Still deferred after the last attempt.
    Failed,
    /// The address is on the suppression list for this type of mail.
    Suppressed,
    /// Marketing mail to a contact whose email marketing consent is not granted.
    SkippedNoConsent,
    /// Nothing to send: the contact is gone or has no address, or its data cannot fill the
    /// template; `detail` says which.
    Skipped,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "SuppressionReason", remote = "delivery::SuppressionReason")]
pub enum SuppressionReasonValue {
    /// The mailbox does not exist or refuses mail for good: no mail of any type goes there.
    HardBounce,
    /// The recipient reported mail as spam: no more marketing mail.
    Complaint,
    /// No more marketing mail.
    Unsubscribe,
    /// Set by an admin: no mail of any type.
    Manual,
}

/// One message of the outbox: what was sent (or not) to whom, and how it went.
pub struct EmailSendNode(pub Send);

#[Object(name = "EmailSend")]
impl EmailSendNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email_id(&self) -> ID {
        ID(self.0.email_id.to_string())
    }

    /// The id of the exact version sent.
    async fn email_version_id(&self) -> ID {
        ID(self.0.email_version_id.to_string())
    }

    #[graphql(name = "type")]
    async fn email_type(&self) -> EmailTypeValue {
        self.0.email_type.into()
    }

    async fn contact_id(&self) -> Option<ID> {
        self.0.contact_id.map(|id| ID(id.to_string()))
    }

    /// Whether this was a test, sent to a staff address instead of the contact's.
    async fn test(&self) -> bool {
        self.0.recipient.is_some()
    }

    async fn status(&self) -> SendStatusValue {
        self.0.status.into()
    }

    /// How many times the relay was asked.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }

    /// When a queued or deferred send is due.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        (!self.0.status.is_final()).then_some(self.0.next_attempt_at)
    }

    /// The relay's answer, or the rule that stopped the send.
    async fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// The `Message-ID` header every attempt carries.
    async fn message_id(&self) -> Option<&str> {
        self.0.message_id.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent_at
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Suppression")]
pub struct SuppressionNode {
    reason: SuppressionReasonValue,
    /// The contact the address belonged to when it was suppressed.
    contact_id: Option<ID>,
    /// What reported it: smtp, an admin, an unsubscribe, a webhook source.
    source: String,
    detail: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<Suppression> for SuppressionNode {
    fn from(entry: Suppression) -> Self {
        Self {
            reason: entry.reason.into(),
            contact_id: entry.contact_id.map(|id| ID(id.to_string())),
            source: entry.source,
            detail: entry.detail,
            created_at: entry.created_at,
        }
    }
}

#[derive(InputObject)]
pub struct SendEmailInput {
    email_id: ID,
    contact: ContactLookup,
    /// Sending again with the same key (for the same email and contact) returns the first send
    /// instead of queuing another. At most 150 characters.
    idempotency_key: Option<String>,
    /// Properties templates see as `event`.
    event: Option<Json<Value>>,
}

#[derive(SimpleObject)]
pub struct SendEmailPayload {
    send: EmailSendNode,
    /// False when the idempotency key found an earlier send.
    created: bool,
}

#[derive(InputObject)]
pub struct SendTestEmailInput {
    email_id: ID,
    /// Defaults to the current version.
    version: Option<i32>,
    /// Whose data fills the templates; without one every fallback shows.
    contact: Option<ContactLookup>,
    /// Up to 10 addresses.
    to: Vec<String>,
}

#[derive(Default)]
pub struct SendingQuery;

#[Object]
impl SendingQuery {
    /// The delivery log, newest first: every send, or those of one contact, email or status.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    #[allow(clippy::too_many_arguments)]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        contact_id: Option<ID>,
        email_id: Option<ID>,
        status: Option<SendStatusValue>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<Uuid>, EmailSendNode>> {
        let filter = SendFilter {
            contact_id: contact_id.map(|id| parse_contact_id("contactId", &id)).transpose()?,
            email_id: email_id.map(|id| parse_uuid("emailId", &id)).transpose()?,
            status: status.map(Into::into),
        };
        let request = page_request(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.deliveries(request_of(ctx)?, &filter, &request).await?;
        Ok(connection(page, &request, |send| send.id, EmailSendNode))
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn email_send(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Option<EmailSendNode>> {
        let id = parse_uuid("id", &id)?;
        Ok(services_of(ctx)?.find_send(request_of(ctx)?, id).await?.map(EmailSendNode))
    }

    /// Why an address is on the suppression list; empty when it is not.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn suppressions(&self, ctx: &Context<'_>, address: String) -> GqlResult<Vec<SuppressionNode>> {
        let address = parse_arg("address", EmailAddress::parse(&address))?;
        let found = services_of(ctx)?.suppressions(request_of(ctx)?, &address).await?;
        Ok(found.into_iter().map(SuppressionNode::from).collect())
    }
}

#[derive(Default)]
pub struct SendingMutation;

#[Object]
impl SendingMutation {
    /// Queues the current version of an email for one contact. Marketing email still needs the
    /// contact's email marketing consent when it is delivered; both types skip suppressed
    /// addresses (see `SuppressionReason`).
    #[graphql(guard = "Allow::to(Permission::MailSend)")]
    async fn send_email(&self, ctx: &Context<'_>, input: SendEmailInput) -> GqlResult<SendEmailPayload> {
        let idempotency_key = input
            .idempotency_key
            .map(|key| {
                let length = key.chars().count();
                if key.trim().is_empty() || length > MAX_IDEMPOTENCY_KEY_CHARS || key.chars().any(char::is_control) {
                    Err(GqlError::bad_input(
                        "input.idempotencyKey",
                        format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters"),
                    ))
                } else {
                    Ok(key)
                }
            })
            .transpose()?;
        let request = SendRequest {
            email_id: parse_uuid("input.emailId", &input.email_id)?,
            contact: input.contact.parse("input.contact")?,
            idempotency_key,
            event: input.event.map(|Json(raw)| parse_arg("input.event", EventProperties::parse(raw))).transpose()?,
        };
        let (send, created) = services_of(ctx)?.send_email(request_of(ctx)?, request).await?;
        Ok(SendEmailPayload { send: EmailSendNode(send), created })
    }

    /// Queues a test of an email to up to 10 staff addresses, its subject marked `[Test]`.
    /// Tests skip the consent check and marketing suppressions, and carry no tracking.
    #[graphql(guard = "Allow::to(Permission::MailSend).and(Allow::to(Permission::ProfilesRead))")]
    async fn send_test_email(&self, ctx: &Context<'_>, input: SendTestEmailInput) -> GqlResult<Vec<EmailSendNode>> {
        if input.to.is_empty() || input.to.len() > MAX_TEST_RECIPIENTS {
            return Err(GqlError::bad_input("input.to", format!("must hold 1 to {MAX_TEST_RECIPIENTS} addresses")));
        }
        let to = input
            .to
            .iter()
            .enumerate()
            .map(|(index, raw)| parse_arg(&format!("input.to[{index}]"), EmailAddress::parse(raw)))
            .collect::<GqlResult<Vec<_>>>()?;
        let email_id = parse_uuid("input.emailId", &input.email_id)?;
        let contact = input.contact.map(|lookup| lookup.parse("input.contact")).transpose()?;
        let sends = services_of(ctx)?.send_test_email(request_of(ctx)?, email_id, input.version, contact, to).await?;
        Ok(sends.into_iter().map(EmailSendNode).collect())
    }

    /// Puts an address on the suppression list. Returns false if it was there for this reason.
    #[graphql(guard = "Allow::to(Permission::MailSend)")]
    async fn suppress_address(
        &self,
        ctx: &Context<'_>,
        address: String,
        reason: SuppressionReasonValue,
        detail: Option<String>,
    ) -> GqlResult<bool> {
        let address = parse_arg("address", EmailAddress::parse(&address))?;
        let detail = detail.map(|raw| parse_arg("detail", crate::domain::clean_text(&raw, 2_000))).transpose()?;
        Ok(services_of(ctx)?.suppress_address(request_of(ctx)?, &address, reason.into(), "admin", detail).await?)
    }

    /// Takes an address off the list, for one reason or (without `reason`) all of them. Returns
    /// how many entries were removed. Needs `privacy:manage`: it overrides what a person or
    /// their mailbox said.
    #[graphql(guard = "Allow::to(Permission::PrivacyManage)")]
    async fn unsuppress_address(
        &self,
        ctx: &Context<'_>,
        address: String,
        reason: Option<SuppressionReasonValue>,
    ) -> GqlResult<i32> {
        let address = parse_arg("address", EmailAddress::parse(&address))?;
        let removed = services_of(ctx)?.unsuppress_address(request_of(ctx)?, &address, reason.map(Into::into)).await?;
        Ok(i32::try_from(removed).unwrap_or(i32::MAX))
    }
}
