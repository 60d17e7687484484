//! Emails over GraphQL: authoring them (every edit a new version, checked before it is saved),
//! listing them with their versions, and previewing a version for one contact.

use async_graphql::{
    Context, Enum, ID, InputObject, Json, MaybeUndefined, Object, SimpleObject,
    connection::{Connection, OpaqueCursor},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    access::parse_uuid,
    contacts::parse_contact_id,
    error::{GqlResult, parse_arg},
    guard::Allow,
    loaders_of, page_cost,
    pagination::{PageArgs, connection, page_request},
    request_of, services_of,
};
use crate::{
    domain::{
        Change,
        access::Permission,
        contact::EmailAddress,
        email::{self, CheckedVersion, Email, Mailbox, parse_body, parse_line, parse_name},
        event::EventProperties,
    },
    service::emails::{Draft, EmailEdit, NewEmail},
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "EmailType", remote = "email::EmailType")]
pub enum EmailTypeValue {
    /// Needs the contact's marketing consent and honours every suppression.
    Marketing,
    /// Receipts and confirmations: no consent check, but never to a hard-bounced address.
    Transactional,
}

pub struct EmailNode(pub Email);

#[Object(name = "Email")]
impl EmailNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The type of the current version.
    #[graphql(name = "type")]
    async fn email_type(&self) -> EmailTypeValue {
        self.0.email_type.into()
    }

    async fn current_version(&self, ctx: &Context<'_>) -> GqlResult<EmailVersionNode> {
        let key = (self.0.id, self.0.current_version);
        let version = loaders_of(ctx)?.email_versions.load_one(key).await?.ok_or_else(|| {
            crate::service::Error::Internal(anyhow::anyhow!("email {} has no version {}", key.0, key.1))
        })?;
        Ok(EmailVersionNode(version))
    }

    /// Every version, newest first.
    #[graphql(complexity = "page_cost(first, last, child_complexity)")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<i32>, EmailVersionNode>> {
        let request = page_request(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.email_history(self.0.id, &request).await?;
        Ok(connection(page, &request, |checked| checked.version.version, EmailVersionNode))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Mailbox")]
pub struct MailboxNode {
    name: Option<String>,
    address: String,
}

impl From<&Mailbox> for MailboxNode {
    fn from(mailbox: &Mailbox) -> Self {
        Self { name: mailbox.name.clone(), address: mailbox.address.as_str().to_owned() }
    }
}

/// One immutable version of an email. Subject, preheader, HTML and text are minijinja templates.
pub struct EmailVersionNode(pub CheckedVersion);

#[Object(name = "EmailVersion")]
impl EmailVersionNode {
    async fn id(&self) -> ID {
        ID(self.0.version.id.to_string())
    }

    /// 1 for the first version, one more for each edit.
    async fn version(&self) -> i32 {
        self.0.version.version
    }

    #[graphql(name = "type")]
    async fn email_type(&self) -> EmailTypeValue {
        self.0.version.email_type.into()
    }

    async fn subject(&self) -> &str {
        &self.0.version.content.subject
    }

    async fn preheader(&self) -> Option<&str> {
        self.0.version.content.preheader.as_deref()
    }

    async fn html(&self) -> &str {
        &self.0.version.content.html
    }

    /// Null when the text part is generated from the HTML.
    async fn text(&self) -> Option<&str> {
        self.0.version.content.text.as_deref()
    }

    async fn from(&self) -> MailboxNode {
        (&self.0.version.from).into()
    }

    async fn reply_to(&self) -> Option<MailboxNode> {
        self.0.version.reply_to.as_ref().map(Into::into)
    }

    /// Open pixel and click redirects.
    async fn tracking(&self) -> bool {
        self.0.version.tracking
    }

    /// What the template check found when this version was saved: references to fields,
    /// topics or purposes that are not defined, and parts that fail for a contact without data.
    async fn warnings(&self) -> &[String] {
        &self.0.warnings
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.version.created_at
    }
}

/// An email and the version a change saved (its warnings included).
#[derive(SimpleObject)]
pub struct EmailPayload {
    email: EmailNode,
    version: EmailVersionNode,
}

/// A version rendered for one contact, as they would receive it.
#[derive(SimpleObject)]
pub struct EmailPreview {
    version: i32,
    subject: String,
    preheader: Option<String>,
    html: String,
    text: String,
    /// True when the version has no text part and this one was generated from the HTML.
    text_generated: bool,
}

#[derive(InputObject)]
pub struct MailboxInput {
    name: Option<String>,
    address: String,
}

impl MailboxInput {
    fn parse(self, field: &str) -> GqlResult<Mailbox> {
        Ok(Mailbox {
            name: self.name.map(|raw| parse_arg(&format!("{field}.name"), parse_name(&raw))).transpose()?,
            address: parse_arg(&format!("{field}.address"), EmailAddress::parse(&self.address))?,
        })
    }
}

/// A new email and its first version. Subject, preheader, HTML and text are minijinja
/// templates; without a text part, one is generated from the HTML when sending.
#[derive(InputObject)]
pub struct CreateEmailInput {
    name: String,
    #[graphql(name = "type")]
    email_type: EmailTypeValue,
    subject: String,
    preheader: Option<String>,
    html: String,
    text: Option<String>,
    from: MailboxInput,
    reply_to: Option<MailboxInput>,
    #[graphql(default = true)]
    tracking: bool,
}

/// Saves a new version of an email still at `expectedVersion`. Fields left out are kept;
/// preheader, text and replyTo set to null are cleared. A rename alone keeps the version.
#[derive(InputObject)]
pub struct UpdateEmailInput {
    id: ID,
    expected_version: i32,
    name: Option<String>,
    #[graphql(name = "type")]
    email_type: Option<EmailTypeValue>,
    subject: Option<String>,
    preheader: MaybeUndefined<String>,
    html: Option<String>,
    text: MaybeUndefined<String>,
    from: Option<MailboxInput>,
    reply_to: MaybeUndefined<MailboxInput>,
    tracking: Option<bool>,
}

fn change<T, U>(raw: MaybeUndefined<T>, parse: impl FnOnce(T) -> GqlResult<U>) -> GqlResult<Change<U>> {
    Ok(match raw {
        MaybeUndefined::Undefined => Change::Keep,
        MaybeUndefined::Null => Change::Clear,
        MaybeUndefined::Value(raw) => Change::Set(parse(raw)?),
    })
}

fn line(field: &str, raw: &str) -> GqlResult<String> {
    parse_arg(field, parse_line(raw))
}

fn body(field: &str, raw: &str) -> GqlResult<String> {
    parse_arg(field, parse_body(raw))
}

#[derive(Default)]
pub struct EmailQuery;

#[Object]
impl EmailQuery {
    /// Emails in creation order.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    async fn emails(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<Uuid>, EmailNode>> {
        let request = page_request(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.list_emails(&request).await?;
        Ok(connection(page, &request, |email| email.id, EmailNode))
    }

    /// One email; null when there is none.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn email(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Option<EmailNode>> {
        let id = parse_uuid("id", &id)?;
        Ok(services_of(ctx)?.find_email(id).await?.map(EmailNode))
    }

    /// Renders a version (the current one unless `version` is given) for one contact, exactly
    /// as they would receive it. `event` stands in for the properties of the event that would
    /// trigger the send; without it, templates see no `event`.
    #[graphql(guard = "Allow::to(Permission::MailSend).and(Allow::to(Permission::ProfilesRead))")]
    async fn preview_email(
        &self,
        ctx: &Context<'_>,
        email_id: ID,
        contact_id: ID,
        version: Option<i32>,
        event: Option<Json<Value>>,
    ) -> GqlResult<EmailPreview> {
        let email_id = parse_uuid("emailId", &email_id)?;
        let contact_id = parse_contact_id("contactId", &contact_id)?;
        let event = event.map(|Json(raw)| parse_arg("event", EventProperties::parse(raw))).transpose()?;
        let preview = services_of(ctx)?.preview_email(email_id, version, contact_id, event).await?;
        let rendered = preview.rendered;
        Ok(EmailPreview {
            version: preview.version,
            subject: rendered.subject,
            preheader: rendered.preheader,
            html: rendered.html,
            text: rendered.text,
            text_generated: preview.text_generated,
        })
    }
}

#[derive(Default)]
pub struct EmailMutation;

#[Object]
impl EmailMutation {
    /// Creates an email with its first version. A template that cannot work is BAD_USER_INPUT
    /// naming the part (`input.html`) with line and column; references to fields that are not
    /// defined are saved, and listed in the version's `warnings`.
    #[graphql(guard = "Allow::to(Permission::MailSend)")]
    async fn create_email(&self, ctx: &Context<'_>, input: CreateEmailInput) -> GqlResult<EmailPayload> {
        let new = NewEmail {
            name: parse_arg("input.name", parse_name(&input.name))?,
            draft: Draft {
                email_type: input.email_type.into(),
                content: email::EmailContent {
                    subject: line("input.subject", &input.subject)?,
                    preheader: input.preheader.map(|raw| line("input.preheader", &raw)).transpose()?,
                    html: body("input.html", &input.html)?,
                    text: input.text.map(|raw| body("input.text", &raw)).transpose()?,
                },
                from: input.from.parse("input.from")?,
                reply_to: input.reply_to.map(|mailbox| mailbox.parse("input.replyTo")).transpose()?,
                tracking: input.tracking,
            },
        };
        let (email, version) = services_of(ctx)?.create_email(request_of(ctx)?, new).await?;
        Ok(EmailPayload { email: EmailNode(email), version: EmailVersionNode(version) })
    }

    /// Saves the changes as a new version. Fails with CONFLICT, writing nothing, when the email
    /// is no longer at `expectedVersion`.
    #[graphql(guard = "Allow::to(Permission::MailSend)")]
    async fn update_email(&self, ctx: &Context<'_>, input: UpdateEmailInput) -> GqlResult<EmailPayload> {
        let id = parse_uuid("input.id", &input.id)?;
        let edit = EmailEdit {
            name: input.name.map(|raw| parse_arg("input.name", parse_name(&raw))).transpose()?,
            email_type: input.email_type.map(Into::into),
            subject: input.subject.map(|raw| line("input.subject", &raw)).transpose()?,
            preheader: change(input.preheader, |raw| line("input.preheader", &raw))?,
            html: input.html.map(|raw| body("input.html", &raw)).transpose()?,
            text: change(input.text, |raw| body("input.text", &raw))?,
            from: input.from.map(|mailbox| mailbox.parse("input.from")).transpose()?,
            reply_to: change(input.reply_to, |mailbox| mailbox.parse("input.replyTo"))?,
            tracking: input.tracking,
        };
        let (email, version) =
            services_of(ctx)?.update_email(request_of(ctx)?, id, input.expected_version, edit).await?;
        Ok(EmailPayload { email: EmailNode(email), version: EmailVersionNode(version) })
    }
}
