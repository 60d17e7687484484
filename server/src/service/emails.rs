//! Emails: creating them, saving each edit as a new immutable version (its templates checked
//! first), and previewing a version for one contact exactly as it would be sent.

use serde_json::Value;
use tracing::instrument;
use uuid::Uuid;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    crypto,
    domain::{
        Change,
        contact::{ContactId, ContactRef},
        email::{CheckedVersion, Email, EmailContent, EmailType, EmailVersion, Mailbox, RenderedEmail},
        event::EventProperties,
        page::{Page, PageRequest},
    },
    mail::render::{self, Links, RenderError, RenderInput, Vocabulary},
    store,
};

/// The versioned settings of an email: what a send renders and who it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub email_type: EmailType,
    pub content: EmailContent,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub tracking: bool,
}

#[derive(Debug, Clone)]
pub struct NewEmail {
    pub name: String,
    pub draft: Draft,
}

/// Changes to an email, already parsed; what is left out is kept from the current version.
#[derive(Debug, Clone, Default)]
pub struct EmailEdit {
    pub name: Option<String>,
    pub email_type: Option<EmailType>,
    pub subject: Option<String>,
    pub preheader: Change<String>,
    pub html: Option<String>,
    pub text: Change<String>,
    pub from: Option<Mailbox>,
    pub reply_to: Change<Mailbox>,
    pub tracking: Option<bool>,
}

/// A version rendered for one contact.
#[derive(Debug, Clone)]
pub struct Preview {
    pub version: i32,
    pub rendered: RenderedEmail,
    /// Whether the text part was made from the HTML, the version having none of its own.
    pub text_generated: bool,
}

impl Services {
    pub async fn list_emails(&self, page: &PageRequest<Uuid>) -> Result<Page<Email>> {
        Ok(store::emails::page(self.db.connection(), page).await?)
    }

    pub async fn find_email(&self, id: Uuid) -> Result<Option<Email>> {
        Ok(store::emails::find(self.db.connection(), id).await?)
    }

    /// Versions named by (email id, version number), in one statement.
    pub async fn email_versions(&self, keys: &[(Uuid, i32)]) -> Result<Vec<CheckedVersion>> {
        Ok(store::emails::versions_of(self.db.connection(), keys).await?)
    }

    /// An email's versions, newest first.
    pub async fn email_history(&self, email_id: Uuid, page: &PageRequest<i32>) -> Result<Page<CheckedVersion>> {
        Ok(store::emails::history(self.db.connection(), email_id, page).await?)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create_email(&self, ctx: &RequestContext, new: NewEmail) -> Result<(Email, CheckedVersion)> {
        let warnings = self.check(&new.draft.content).await?;
        let now = self.now();
        let email = Email {
            id: Uuid::now_v7(),
            name: new.name,
            email_type: new.draft.email_type,
            current_version: 1,
            created_at: now,
            updated_at: now,
        };
        let version = CheckedVersion { version: version_of(&email, new.draft, now), warnings };
        let tx = self.db.begin_write().await?;
        store::emails::insert(&tx, &email).await?;
        store::emails::insert_version(&tx, &version).await?;
        let changes = email_changes(None, (&email, &version.version));
        audit::append(&tx, ctx, now, audit::Entry::new("email.created", "email", email.id.to_string(), changes))
            .await?;
        tx.commit().await?;
        tracing::info!(email_id = %email.id, "email created");
        Ok((email, version))
    }

    /// Saves the edit as a new version if the email is still at `expected_version`; otherwise
    /// writes nothing. A rename alone keeps the version; an edit that changes nothing writes
    /// nothing.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, email_id = %id))]
    pub async fn update_email(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        expected_version: i32,
        edit: EmailEdit,
    ) -> Result<(Email, CheckedVersion)> {
        let conn = self.db.connection();
        let email = store::emails::find(conn, id).await?.ok_or(Error::NotFound { what: "email" })?;
        if email.current_version != expected_version {
            return Err(stale(&email));
        }
        let current = self.current_version(&email).await?;
        let name = edit.name.clone().unwrap_or_else(|| email.name.clone());
        let draft = edit.apply(&current.version);
        let versioned = draft != draft_of(&current.version);
        if !versioned && name == email.name {
            return Ok((email, current));
        }
        // Checked before the write transaction: a render holds no lock.
        let warnings = if versioned { self.check(&draft.content).await? } else { current.warnings.clone() };
        let now = self.now();
        let updated = Email {
            name,
            email_type: draft.email_type,
            current_version: email.current_version + i32::from(versioned),
            updated_at: now,
            ..email.clone()
        };
        let tx = self.db.begin_write().await?;
        let (action, saved) = if versioned {
            let version = CheckedVersion { version: version_of(&updated, draft, now), warnings };
            store::emails::insert_version(&tx, &version).await?;
            ("email.versioned", version)
        } else {
            ("email.renamed", current.clone())
        };
        if !store::emails::advance(&tx, &updated, expected_version).await? {
            return Err(Error::Conflict {
                field: Some("expectedVersion".to_owned()),
                reason: "the email was changed meanwhile; read it again".to_owned(),
            });
        }
        let changes = email_changes(Some((&email, &current.version)), (&updated, &saved.version));
        audit::append(&tx, ctx, now, audit::Entry::new(action, "email", id.to_string(), changes)).await?;
        tx.commit().await?;
        tracing::info!(version = updated.current_version, action, "email saved");
        Ok((updated, saved))
    }

    /// Renders a version (the current one unless `number` is given) for one contact, with the
    /// properties of a triggering event if given, exactly as a send would.
    #[instrument(skip_all, fields(email_id = %email_id, contact_id = %contact_id))]
    pub async fn preview_email(
        &self,
        email_id: Uuid,
        number: Option<i32>,
        contact_id: ContactId,
        event: Option<EventProperties>,
    ) -> Result<Preview> {
        let conn = self.db.connection();
        let email = store::emails::find(conn, email_id).await?.ok_or(Error::NotFound { what: "email" })?;
        let version = match number {
            Some(number) => store::emails::version(conn, email_id, number)
                .await?
                .ok_or(Error::NotFound { what: "email version" })?,
            None => self.current_version(&email).await?,
        }
        .version;
        let contact = store::contacts::find(conn, self.db.keys()?, &ContactRef::Id(contact_id))
            .await?
            .ok_or(Error::NotFound { what: "contact" })?;
        let topics = store::topics::subscriptions(conn, &[contact_id]).await?;
        let consents = store::consents::current(conn, &[contact_id]).await?;
        // The preview shows where the links go, without working tokens in them.
        let links = Links {
            preferences: Some(format!("{}/preferences/preview", self.public_url())),
            unsubscribe: Some(format!("{}/unsubscribe/preview", self.public_url())),
        };
        let input = RenderInput {
            contact: &contact,
            topics: &topics,
            consents: &consents,
            event: event.as_ref().map(EventProperties::as_map),
            links: &links,
        };
        let rendered = render::render(&version, input).map_err(|error| invalid(error, ""))?;
        Ok(Preview { version: version.version, rendered, text_generated: version.content.text.is_none() })
    }

    async fn current_version(&self, email: &Email) -> Result<CheckedVersion> {
        store::emails::version(self.db.connection(), email.id, email.current_version).await?.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("email {} has no version {}", email.id, email.current_version))
        })
    }

    /// The template check, against the fields, topics and purposes defined now.
    async fn check(&self, content: &EmailContent) -> Result<Vec<String>> {
        let conn = self.db.connection();
        let vocabulary = Vocabulary {
            fields: store::fields::all(conn).await?.into_iter().map(|field| field.key.to_string()).collect(),
            topics: store::topics::all(conn).await?.into_iter().map(|topic| topic.key.to_string()).collect(),
            purposes: store::consents::purposes(conn)
                .await?
                .into_iter()
                .map(|purpose| purpose.key.to_string())
                .collect(),
        };
        render::check(content, &vocabulary).map_err(|error| invalid(error, "input."))
    }
}

impl EmailEdit {
    fn apply(self, current: &EmailVersion) -> Draft {
        let content = &current.content;
        Draft {
            email_type: self.email_type.unwrap_or(current.email_type),
            content: EmailContent {
                subject: self.subject.unwrap_or_else(|| content.subject.clone()),
                preheader: self.preheader.apply(content.preheader.clone()),
                html: self.html.unwrap_or_else(|| content.html.clone()),
                text: self.text.apply(content.text.clone()),
            },
            from: self.from.unwrap_or_else(|| current.from.clone()),
            reply_to: self.reply_to.apply(current.reply_to.clone()),
            tracking: self.tracking.unwrap_or(current.tracking),
        }
    }
}

fn draft_of(version: &EmailVersion) -> Draft {
    Draft {
        email_type: version.email_type,
        content: version.content.clone(),
        from: version.from.clone(),
        reply_to: version.reply_to.clone(),
        tracking: version.tracking,
    }
}

/// The version numbered `email.current_version`, holding `draft`.
fn version_of(email: &Email, draft: Draft, now: chrono::DateTime<chrono::Utc>) -> EmailVersion {
    EmailVersion {
        id: Uuid::now_v7(),
        email_id: email.id,
        version: email.current_version,
        email_type: draft.email_type,
        content: draft.content,
        from: draft.from,
        reply_to: draft.reply_to,
        tracking: draft.tracking,
        created_at: now,
    }
}

/// A template failure as input to correct, naming the part as the caller sent it.
fn invalid(error: RenderError, prefix: &str) -> Error {
    Error::validation(format!("{prefix}{}", error.part), error.failure)
}

fn stale(email: &Email) -> Error {
    Error::Conflict {
        field: Some("expectedVersion".to_owned()),
        reason: format!("the email was changed meanwhile; it is now at version {}", email.current_version),
    }
}

/// What changed between two states of an email, for the audit log. Bodies are recorded by
/// their SHA-256, which names the exact template without copying it into every entry.
fn email_changes(before: Option<(&Email, &EmailVersion)>, after: (&Email, &EmailVersion)) -> Changes {
    fn mailbox(mailbox: &Mailbox) -> Value {
        serde_json::json!({ "name": mailbox.name, "address": mailbox.address.as_str() })
    }
    let settings = |(email, version): (&Email, &EmailVersion)| -> [(&'static str, Option<Value>); 10] {
        let content = &version.content;
        [
            ("name", Some(Value::from(email.name.as_str()))),
            ("type", Some(Value::from(version.email_type.as_str()))),
            ("version", Some(Value::from(version.version))),
            ("subject", Some(Value::from(content.subject.as_str()))),
            ("preheader", content.preheader.as_deref().map(Value::from)),
            ("html", Some(Value::from(crypto::secret_digest(&content.html)))),
            ("text", content.text.as_deref().map(|text| Value::from(crypto::secret_digest(text)))),
            ("from", Some(mailbox(&version.from))),
            ("replyTo", version.reply_to.as_ref().map(mailbox)),
            ("tracking", Some(Value::from(version.tracking))),
        ]
    };
    let mut changes = Changes::new();
    let old = before.map(settings);
    for (index, (field, new)) in settings(after).into_iter().enumerate() {
        changes.field(field, old.as_ref().and_then(|old| old[index].1.clone()), new);
    }
    changes
}
