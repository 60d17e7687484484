//! Signup forms and double opt-in. A submission answers the same whether the address was known
//! or not; what it does:
//! - a new address becomes a contact (a known one keeps its data: anyone can type anyone's
//!   address into a form);
//! - `form.submitted` is recorded on the contact, for programs that start from a form;
//! - without double opt-in, email marketing consent is granted and the form's topics subscribed;
//! - with it, consent becomes `PENDING` (never downgrading a `GRANTED` one, which would let
//!   anyone unsubscribe anyone) and an opt-in request, holding the proof of the submission and
//!   the topics asked for, waits for the link in a confirmation email; a second submission
//!   while one is open sends nothing more. Following the link grants consent with the proof of
//!   the confirmation, and subscribes the topics.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::instrument;
use uuid::Uuid;

use super::{
    Error, RequestContext, Result, Services,
    consents::{ConsentDecision, append_decision},
    contacts::{ContactChanges, UpsertKey},
    events::NewEvent,
};
use crate::{
    audit::{self, Changes},
    domain::{
        access::{ContactTokenPurpose, Permission},
        consent::{
            Channel, ConsentProof, ConsentSource, ConsentStatus, LegalBasis, MARKETING, WordingId, email_marketing,
        },
        contact::{ContactId, ContactRef, EmailAddress},
        delivery::SendKey,
        event::{EventProperties, EventType},
        forms::{OPT_IN_LIFETIME, OptInRequest, OptInStatus, SignupForm},
        key::Key,
        request::Actor,
        topic::SubscriptionStatus,
    },
    store,
};

#[derive(Debug, Clone)]
pub struct NewSignupForm {
    pub key: Key,
    pub name: String,
    pub topics: Vec<Key>,
    pub fields: Vec<String>,
    pub wording: String,
    pub double_opt_in: bool,
}

/// What a person typed into a form.
#[derive(Debug, Clone)]
pub struct Submission {
    pub email: EmailAddress,
    /// Values by field key as typed; only the fields the form asks for are read.
    pub fields: Vec<(String, String)>,
    /// The topics ticked; none means all of the form's.
    pub topics: Vec<Key>,
}

impl Services {
    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %new.key))]
    pub async fn create_signup_form(&self, ctx: &RequestContext, new: NewSignupForm) -> Result<SignupForm> {
        self.require(ctx, Permission::SchemaManage)?;
        let conn = self.db.connection();
        let topics = store::topics::all(conn).await?;
        for (index, key) in new.topics.iter().enumerate() {
            if !topics.iter().any(|topic| topic.key == *key) {
                return Err(Error::validation(
                    format!("input.topics[{index}]"),
                    format!("unknown topic {:?}", key.as_str()),
                ));
            }
        }
        super::preferences::check_profile_fields("input.fields", &new.fields, &store::fields::all(conn).await?)?;
        if store::forms::find_by_key(conn, &new.key).await?.is_some() {
            return Err(Error::Conflict {
                field: Some("input.key".to_owned()),
                reason: "a form has this key".to_owned(),
            });
        }
        let now = self.now();
        let form = SignupForm {
            id: Uuid::now_v7(),
            key: new.key,
            name: new.name,
            topics: new.topics,
            fields: new.fields,
            wording: new.wording,
            double_opt_in: new.double_opt_in,
            created_at: now,
            updated_at: now,
        };
        let tx = self.db.begin_write().await?;
        store::forms::insert(&tx, &form).await?;
        let mut changes = Changes::new();
        changes
            .field("name", None, Some(Value::from(form.name.as_str())))
            .field("topics", None, Some(json!(form.topics.iter().map(Key::as_str).collect::<Vec<_>>())))
            .field("fields", None, Some(json!(form.fields)))
            .field("wording", None, Some(Value::from(form.wording.as_str())))
            .field("doubleOptIn", None, Some(Value::from(form.double_opt_in)));
        audit::append(
            &tx,
            ctx,
            now,
            audit::Entry::new("signup_form.created", "signup_form", form.key.as_str(), changes),
        )
        .await?;
        tx.commit().await?;
        Ok(form)
    }

    pub async fn signup_forms(&self) -> Result<Vec<SignupForm>> {
        Ok(store::forms::all(self.db.connection()).await?)
    }

    /// A contact's opt-in requests, newest first.
    pub async fn opt_in_requests(&self, ctx: &RequestContext, contact_id: ContactId) -> Result<Vec<OptInRequest>> {
        self.require(ctx, Permission::ProfilesRead)?;
        Ok(store::forms::requests_of(self.db.connection(), contact_id).await?)
    }

    /// Takes a submission of form `key` from anyone. `NotFound` only for a form that does not
    /// exist; everything else about the address stays unsaid.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, form = %key))]
    pub async fn submit_form(&self, ctx: &RequestContext, key: &Key, submission: Submission) -> Result<()> {
        let conn = self.db.connection();
        let form = store::forms::find_by_key(conn, key).await?.ok_or(Error::NotFound { what: "form" })?;
        let topics: Vec<Key> = if submission.topics.is_empty() {
            form.topics.clone()
        } else {
            submission.topics.iter().filter(|topic| form.topics.contains(topic)).cloned().collect()
        };
        // Every value is checked whether or not the address is known, so the answer tells nothing.
        let mut profile = ContactChanges::default();
        let definitions = &self.catalog().await?.fields;
        for key in &form.fields {
            let submitted = submission.fields.iter().find(|(name, _)| name == key).map(|(_, value)| value.trim());
            let Some(input) = super::preferences::field_input(key, definitions) else { continue };
            if let Some(value) = submitted.filter(|value| !value.is_empty()) {
                super::preferences::set_typed_field(&mut profile, key, input, value, definitions, key)?;
            }
        }
        let reference = ContactRef::Email(submission.email.clone());
        let known = store::contacts::resolve(conn, self.db.keys()?, std::slice::from_ref(&reference)).await?;
        let contact_id = match known.get(&reference) {
            Some(id) => *id,
            None => {
                let changes = ContactChanges {
                    // Granted here when nothing needs confirming: it also lets an erased
                    // address back in, as a new consent must.
                    consents: if form.double_opt_in {
                        Vec::new()
                    } else {
                        vec![self.form_decision(&form, ConsentStatus::Granted, ctx)]
                    },
                    ..profile
                };
                match self.upsert_contact(ctx, UpsertKey::Email(submission.email.clone()), changes).await {
                    Ok(upserted) => upserted.contact.id,
                    // An erased address without a new consent: nothing is recorded of it.
                    Err(Error::Conflict { .. }) => return Ok(()),
                    Err(error) => return Err(error),
                }
            }
        };
        self.record_form_event(ctx, &form, contact_id).await?;
        if form.double_opt_in {
            self.ask_for_confirmation(ctx, &form, contact_id, topics).await
        } else {
            self.subscribe_from_form(ctx, &form, contact_id, &topics, None).await
        }
    }

    /// Sends the confirmation email of `form_key` to a contact whose consent is pending (made
    /// through the API or an import, say).
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %contact_id))]
    pub async fn request_opt_in_confirmation(
        &self,
        ctx: &RequestContext,
        contact_id: ContactId,
        form_key: &Key,
    ) -> Result<()> {
        self.require(ctx, Permission::ProfilesWrite)?;
        let conn = self.db.connection();
        let form = store::forms::find_by_key(conn, form_key).await?.ok_or(Error::NotFound { what: "form" })?;
        if store::contacts::find(conn, self.db.keys()?, &ContactRef::Id(contact_id)).await?.is_none() {
            return Err(Error::NotFound { what: "contact" });
        }
        let topics = form.topics.clone();
        self.ask_for_confirmation(ctx, &form, contact_id, topics).await
    }

    /// Confirms every open opt-in request of the contact holding a `CONFIRM_OPT_IN` token:
    /// grants email marketing consent with the proof of this confirmation and subscribes the
    /// topics asked for. False when nothing was open (confirmed before, or expired).
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn confirm_opt_in(&self, ctx: &RequestContext) -> Result<bool> {
        let Actor::Contact { contact_id, purpose: ContactTokenPurpose::ConfirmOptIn } = ctx.actor else {
            return Err(Error::Forbidden);
        };
        let now = self.now();
        let open: Vec<OptInRequest> = store::forms::requests_of(self.db.connection(), contact_id)
            .await?
            .into_iter()
            .filter(|request| request.is_open(now))
            .collect();
        if open.is_empty() {
            return Ok(false);
        }
        for request in &open {
            let Some(form) = store::forms::find(self.db.connection(), request.form_id).await? else { continue };
            self.subscribe_from_form(ctx, &form, contact_id, &request.topics, Some(request)).await?;
        }
        Ok(true)
    }

    /// The contact a confirmation link names; `Unauthenticated` for any other token.
    pub async fn confirmation_link_actor(&self, token: &str) -> Result<Actor> {
        match self.authenticate_bearer(token).await {
            Ok(actor @ Actor::Contact { purpose: ContactTokenPurpose::ConfirmOptIn, .. }) => Ok(actor),
            _ => Err(Error::Unauthenticated),
        }
    }

    fn form_decision(&self, form: &SignupForm, status: ConsentStatus, ctx: &RequestContext) -> ConsentDecision {
        ConsentDecision {
            purpose: Key::parse(MARKETING).unwrap_or_else(|_| form.key.clone()),
            channel: Channel::Email,
            status,
            legal_basis: LegalBasis::Consent,
            source: ConsentSource::Form,
            captured_at: None,
            proof: ConsentProof {
                ip: ctx.ip,
                user_agent: ctx.user_agent.clone(),
                wording_id: WordingId::parse(&format!("form:{}", form.key.as_str())).ok(),
                // A form's wording never changes, yet its hash shows which text that was.
                wording_version: super::consents::wording_version(None, &form.wording),
            },
        }
    }

    async fn record_form_event(&self, ctx: &RequestContext, form: &SignupForm, contact_id: ContactId) -> Result<()> {
        let internal = |what: &str| Error::Internal(anyhow::anyhow!("form event: invalid {what}"));
        let event = NewEvent {
            contact: ContactRef::Id(contact_id),
            event_type: EventType::parse("form.submitted").map_err(|_| internal("type"))?,
            properties: EventProperties::parse(json!({ "form": form.key.as_str() }))
                .map_err(|_| internal("properties"))?,
            occurred_at: None,
            source: Key::parse("form").map_err(|_| internal("source"))?,
            idempotency_key: None,
        };
        match self.track_events(ctx, vec![Ok(event)]).await?.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(error),
            None => Err(internal("outcome")),
        }
    }

    /// Grants email marketing consent (unless it is granted already) and subscribes `topics`, in
    /// one transaction; `confirming` is the request this completes, if any.
    async fn subscribe_from_form(
        &self,
        ctx: &RequestContext,
        form: &SignupForm,
        contact_id: ContactId,
        topics: &[Key],
        confirming: Option<&OptInRequest>,
    ) -> Result<()> {
        let now = self.now();
        let tx = self.db.begin_write().await?;
        if email_marketing(&store::consents::current(&tx, &[contact_id]).await?) != Some(ConsentStatus::Granted) {
            let mut decision = self.form_decision(form, ConsentStatus::Granted, ctx);
            if let Some(request) = confirming {
                // The decision records the confirmation; the request it names holds the proof
                // of the submission.
                decision.proof.wording_id = WordingId::parse(&format!("opt-in:{}", request.id)).ok();
            }
            let purposes = store::consents::purposes(&tx).await?;
            let change = decision.settle(contact_id, now, &purposes)?;
            append_decision(&tx, ctx, &change, now).await?;
        }
        let all = store::topics::all(&tx).await?;
        for key in topics {
            if let Some(topic) = all.iter().find(|topic| topic.key == *key) {
                self.subscribe_in(&tx, ctx, contact_id, topic, SubscriptionStatus::Subscribed, None).await?;
            }
        }
        if let Some(request) = confirming {
            // Following the link proves the person holds the mailbox: an unsubscribe of theirs
            // from before no longer stands in the way of the mail they now ask for.
            super::unsubscribe::lift_unsubscribe(self, &tx, ctx, contact_id, now).await?;
            store::forms::confirm(&tx, &[request.id], now).await?;
            let mut changes = Changes::new();
            changes.field("status", Some(Value::from("pending")), Some(Value::from("confirmed")));
            audit::append(
                &tx,
                ctx,
                now,
                audit::Entry::new("opt_in.confirmed", "contact", contact_id.to_string(), changes),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Consent becomes pending (unless granted), and a confirmation email goes out unless a
    /// request for this form is still open.
    async fn ask_for_confirmation(
        &self,
        ctx: &RequestContext,
        form: &SignupForm,
        contact_id: ContactId,
        topics: Vec<Key>,
    ) -> Result<()> {
        let now = self.now();
        let settings = store::preferences::get(self.db.connection()).await?;
        let tx = self.db.begin_write().await?;
        let status = email_marketing(&store::consents::current(&tx, &[contact_id]).await?);
        if status.is_none() || status == Some(ConsentStatus::Denied) {
            let purposes = store::consents::purposes(&tx).await?;
            let change = self.form_decision(form, ConsentStatus::Pending, ctx).settle(contact_id, now, &purposes)?;
            append_decision(&tx, ctx, &change, now).await?;
        }
        let open = store::forms::requests_of(&tx, contact_id)
            .await?
            .into_iter()
            .any(|request| request.form_id == form.id && request.is_open(now));
        if !open {
            let request = OptInRequest {
                id: Uuid::now_v7(),
                contact_id,
                form_id: form.id,
                topics,
                status: OptInStatus::Pending,
                submitted_ip: ctx.ip,
                submitted_user_agent: ctx.user_agent.clone(),
                submitted_at: now,
                expires_at: now + OPT_IN_LIFETIME,
                confirmed_at: None,
            };
            store::forms::insert_request(&tx, &request).await?;
            self.queue_confirmation(&tx, ctx, &settings, contact_id, &request, now).await?;
        }
        tx.commit().await?;
        self.mail_wakeup.notify_one();
        Ok(())
    }

    async fn queue_confirmation(
        &self,
        tx: &impl sea_orm::ConnectionTrait,
        ctx: &RequestContext,
        settings: &crate::domain::preferences::PreferenceCenter,
        contact_id: ContactId,
        request: &OptInRequest,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(email_id) = settings.confirmation_email_id else {
            tracing::warn!(
                "an opt-in needs confirming, but the preference center has no sender: set one with updatePreferenceCenter"
            );
            return Ok(());
        };
        let Some(email) = store::emails::find(tx, email_id).await? else { return Ok(()) };
        let Some(version) = store::emails::version(tx, email_id, email.current_version).await? else { return Ok(()) };
        let token = self.link_signer()?.sign(contact_id, ContactTokenPurpose::ConfirmOptIn, now);
        let link = format!("{}/confirm/{}", self.public_url(), token.token);
        let context = EventProperties::parse(json!({ "link": link }))
            .map_err(|error| Error::Internal(anyhow::anyhow!("confirmation context: {error}")))?;
        let key = SendKey::parse(&format!("opt-in:{}", request.id))
            .map_err(|error| Error::Internal(anyhow::anyhow!("send key: {error}")))?;
        let send = super::sending::new_send(&version.version, key, Some(contact_id), None, Some(context), now);
        self.queue_in(tx, ctx, &[send], "email.send_queued").await?;
        Ok(())
    }
}
