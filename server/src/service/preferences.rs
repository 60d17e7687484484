//! The preference center: its settings, the view of one contact's page, and saving what the
//! contact sent back. Saving goes through the same use cases as the API (consents, topic
//! subscriptions, contact updates), so the consent history, its proof and the audit log are the
//! same whichever way a change came in.

use serde_json::{Value, json};
use tracing::instrument;
use uuid::Uuid;

use super::{
    Error, RequestContext, Result, Services,
    consents::ConsentDecision,
    contacts::ContactChanges,
    emails::{Draft, NewEmail},
};
use crate::{
    audit::{self, Changes},
    domain::{
        Change,
        access::Permission,
        consent::{
            Channel, ConsentChange, ConsentProof, ConsentSource, ConsentStatus, LegalBasis, MARKETING, Purpose,
            WordingId,
        },
        contact::{Contact, ContactRef, CountryCode, EmailAddress, Locale, PersonName, TimeZone},
        delivery::SuppressionReason,
        email::{EmailContent, EmailType, Mailbox},
        field::{FieldDefinition, FieldType, FieldValue},
        preferences::{EDITABLE_PROFILE_FIELDS, PreferenceCenter, PreferencesForm},
        texts,
        topic::{SubscriptionStatus, Topic, TopicSubscription},
    },
    store,
};

/// Changes to the settings; what is left out stays as it is.
#[derive(Debug, Clone, Default)]
pub struct PreferenceCenterUpdate {
    pub company_name: Option<String>,
    pub logo: Change<String>,
    pub primary_color: Option<String>,
    pub footer_text: Change<String>,
    pub privacy_policy_url: Change<String>,
    pub editable_fields: Option<Vec<String>>,
    pub sender_name: Change<String>,
    pub sender_address: Change<EmailAddress>,
}

/// One contact's page: the settings, and the contact's topics, consents and editable fields.
#[derive(Debug, Clone)]
pub struct PreferencesView {
    pub settings: PreferenceCenter,
    pub contact: Contact,
    pub topics: Vec<(Topic, Option<TopicSubscription>)>,
    pub purposes: Vec<Purpose>,
    pub consents: Vec<ConsentChange>,
    pub fields: Vec<EditableField>,
}

/// A field the contact may edit, as the form shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditableField {
    pub key: String,
    /// The custom field's label; built-in fields are labelled by the page's language.
    pub label: Option<String>,
    /// `text`, `number`, `date`, `checkbox` or `select`.
    pub input: &'static str,
    pub value: String,
    pub options: Vec<String>,
}

impl PreferencesView {
    pub fn consent_status(&self, purpose: &Purpose, channel: Channel) -> Option<ConsentStatus> {
        self.consents
            .iter()
            .find(|consent| consent.purpose == purpose.key && consent.channel == channel)
            .map(|consent| consent.status)
    }
}

impl Services {
    pub async fn preference_center(&self) -> Result<PreferenceCenter> {
        Ok(store::preferences::get(self.db.connection()).await?)
    }

    /// Saves new settings. The first sender creates the center's two emails (a fresh link, an
    /// opt-in confirmation) as ordinary transactional emails that admins may edit.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn update_preference_center(
        &self,
        ctx: &RequestContext,
        update: PreferenceCenterUpdate,
    ) -> Result<PreferenceCenter> {
        self.require(ctx, Permission::SchemaManage)?;
        let before = self.preference_center().await?;
        let mut settings = before.clone();
        if let Some(fields) = update.editable_fields {
            check_profile_fields("input.editableFields", &fields, &store::fields::all(self.db.connection()).await?)?;
            settings.editable_fields = fields;
        }
        if let Some(name) = update.company_name {
            settings.company_name = name;
        }
        if let Some(color) = update.primary_color {
            settings.primary_color = color;
        }
        settings.logo = update.logo.apply(settings.logo);
        settings.footer_text = update.footer_text.apply(settings.footer_text);
        settings.privacy_policy_url = update.privacy_policy_url.apply(settings.privacy_policy_url);
        settings.sender_name = update.sender_name.apply(settings.sender_name);
        settings.sender_address =
            update.sender_address.apply(settings.sender()).map(|address| address.as_str().to_owned());
        if let Some(address) = settings.sender() {
            let from = Mailbox { name: settings.sender_name.clone(), address };
            if settings.link_email_id.is_none() {
                settings.link_email_id =
                    Some(self.create_center_email(ctx, "Preference center: link", LINK_EMAIL, &from).await?);
            }
            if settings.confirmation_email_id.is_none() {
                settings.confirmation_email_id = Some(
                    self.create_center_email(ctx, "Preference center: confirm subscription", CONFIRMATION_EMAIL, &from)
                        .await?,
                );
            }
        }
        let now = self.now();
        let tx = self.db.begin_write().await?;
        store::preferences::save(&tx, &settings, now).await?;
        let mut changes = Changes::new();
        let (old, new) = (json!(before), json!(settings));
        for (field, value) in new.as_object().into_iter().flatten() {
            let previous = old.get(field).cloned().filter(|previous| !previous.is_null());
            let value = Some(value.clone()).filter(|value| !value.is_null());
            if previous != value {
                changes.field(field.clone(), previous, value);
            }
        }
        let entry = audit::Entry::new("preference_center.updated", "preference_center", "settings", changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(settings)
    }

    async fn create_center_email(
        &self,
        ctx: &RequestContext,
        name: &str,
        (subject, html): (&str, &str),
        from: &Mailbox,
    ) -> Result<Uuid> {
        let new = NewEmail {
            name: name.to_owned(),
            draft: Draft {
                email_type: EmailType::Transactional,
                content: EmailContent {
                    subject: subject.to_owned(),
                    preheader: None,
                    html: html.to_owned(),
                    text: None,
                },
                from: from.clone(),
                reply_to: None,
                tracking: false,
            },
        };
        Ok(self.create_email(ctx, new).await?.0.id)
    }

    /// What the page of the contact holding a preferences token shows.
    pub async fn preferences_view(&self, ctx: &RequestContext) -> Result<PreferencesView> {
        let contact_id = ctx.actor.own_contact().ok_or(Error::Forbidden)?;
        let conn = self.db.connection();
        let catalog = self.catalog().await?;
        let contact = store::contacts::find(conn, self.db.keys()?, &ContactRef::Id(contact_id))
            .await?
            .ok_or(Error::NotFound { what: "contact" })?;
        let subscriptions = store::topics::subscriptions(conn, &[contact_id]).await?;
        let topics = catalog
            .topics
            .iter()
            .map(|topic| {
                let subscription =
                    subscriptions.iter().find(|(_, subscribed)| subscribed.id == topic.id).map(|(s, _)| s.clone());
                (topic.clone(), subscription)
            })
            .collect();
        let fields = catalog
            .settings
            .editable_fields
            .iter()
            .filter_map(|key| editable_field(key, &contact, &catalog.fields))
            .collect();
        Ok(PreferencesView {
            purposes: catalog.purposes.clone(),
            consents: store::consents::current(conn, &[contact_id]).await?,
            settings: catalog.settings.clone(),
            contact,
            topics,
            fields,
        })
    }

    /// Saves the page as the contact sent it: subscriptions, consents and editable fields that
    /// differ from what is stored change; nothing else is written.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn save_preferences(&self, ctx: &RequestContext, form: PreferencesForm) -> Result<()> {
        let view = self.preferences_view(ctx).await?;
        let contact_id = view.contact.id;
        // Every value is checked before anything is written: a bad one saves nothing.
        let changes = field_changes(&view, &form, &self.catalog().await?.fields)?;
        // The language the page was shown in, which words the built-in purposes; a form that
        // does not say is taken to have been shown as the page would be now.
        let language = form
            .language
            .or_else(|| view.contact.profile.locale.as_ref().and_then(|locale| texts::spoken(locale.as_str())))
            .unwrap_or(texts::DEFAULT_LANGUAGE);
        for (topic, subscription) in &view.topics {
            let wanted = form.subscribed.contains(&topic.key);
            let frequency = form
                .frequencies
                .iter()
                .find(|(key, _)| *key == topic.key)
                .map(|(_, frequency)| *frequency)
                .or(subscription.as_ref().map(|subscription| subscription.frequency))
                .unwrap_or(topic.default_frequency);
            let current = subscription.as_ref().map(|subscription| (subscription.status, subscription.frequency));
            let target = if wanted {
                Some((SubscriptionStatus::Subscribed, frequency))
            } else {
                current
                    .filter(|(status, _)| *status == SubscriptionStatus::Subscribed)
                    .map(|(_, frequency)| (SubscriptionStatus::Unsubscribed, frequency))
            };
            if let Some((status, frequency)) = target
                && Some((status, frequency)) != current
            {
                self.set_subscription(ctx, contact_id, &topic.key, status, Some(frequency)).await?;
            }
        }
        // Consent granted again by someone else (an admin, a form anyone can fill in) leaves the
        // person's unsubscribe standing; the box they tick now is their own renewed decision.
        let unsubscribed = self.address_unsubscribed(&view.contact).await?;
        for purpose in &view.purposes {
            for channel in Channel::ALL {
                let ticked = form.granted.iter().any(|(key, on)| *key == purpose.key && on == channel);
                let current = view.consent_status(purpose, *channel);
                let renews = unsubscribed && purpose.key.as_str() == MARKETING && *channel == Channel::Email;
                let decision = match (ticked, current) {
                    (true, Some(ConsentStatus::Granted)) if renews => Some(ConsentStatus::Granted),
                    (true, Some(ConsentStatus::Granted))
                    | (false, None | Some(ConsentStatus::Denied | ConsentStatus::Pending)) => None,
                    (true, _) => Some(ConsentStatus::Granted),
                    (false, Some(ConsentStatus::Granted)) => Some(ConsentStatus::Denied),
                };
                if let Some(status) = decision {
                    self.record_consent(ctx, contact_id, page_decision(purpose, *channel, status, language)).await?;
                }
            }
        }
        if let Some(changes) = changes {
            self.update_contact(ctx, contact_id, view.contact.version, changes).await?;
        }
        Ok(())
    }

    /// Whether the contact's address is on the suppression list because they unsubscribed.
    async fn address_unsubscribed(&self, contact: &Contact) -> Result<bool> {
        let Some(address) = &contact.email else { return Ok(false) };
        let index = store::contacts::email_index(self.db.keys()?, address);
        let found = store::outbox::suppressions_of(self.db.connection(), std::slice::from_ref(&index)).await?;
        Ok(found.values().flatten().any(|entry| entry.reason == SuppressionReason::Unsubscribe))
    }

    /// "Unsubscribe from everything": every subscription ends and every granted consent is
    /// denied, each through its own use case.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn unsubscribe_from_everything(
        &self,
        ctx: &RequestContext,
        language: Option<&'static str>,
    ) -> Result<()> {
        let view = self.preferences_view(ctx).await?;
        let form = PreferencesForm {
            fields: view.fields.iter().map(|field| (field.key.clone(), field.value.clone())).collect(),
            language,
            ..PreferencesForm::default()
        };
        self.save_preferences(ctx, form).await
    }

    /// Mails a fresh preferences link to `address` if a contact has it; answers the same either
    /// way, so the page tells nobody whether an address is known.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn send_preferences_link(&self, ctx: &RequestContext, address: &EmailAddress) -> Result<()> {
        let conn = self.db.connection();
        let settings = store::preferences::get(conn).await?;
        let Some(email_id) = settings.link_email_id else {
            tracing::warn!(
                "a preferences link was asked for, but the preference center has no sender: set one with updatePreferenceCenter"
            );
            return Ok(());
        };
        let Some(contact_id) = store::contacts::resolve(conn, self.db.keys()?, &[ContactRef::Email(address.clone())])
            .await?
            .into_values()
            .next()
        else {
            return Ok(());
        };
        let Some(email) = store::emails::find(conn, email_id).await? else { return Ok(()) };
        let Some(version) = store::emails::version(conn, email_id, email.current_version).await? else { return Ok(()) };
        let now = self.now();
        let token = self.link_signer()?.sign(contact_id, crate::domain::access::ContactTokenPurpose::Preferences, now);
        let link = format!("{}/preferences/{}", self.public_url(), token.token);
        let context = crate::domain::event::EventProperties::parse(json!({ "link": link }))
            .map_err(|error| Error::Internal(anyhow::anyhow!("link context: {error}")))?;
        // One link per address and minute: a flood of requests sends one mail.
        let key = format!("preferences-link:{contact_id}:{}", now.timestamp().div_euclid(60));
        let send_key = crate::domain::delivery::SendKey::parse(&key)
            .map_err(|error| Error::Internal(anyhow::anyhow!("send key: {error}")))?;
        let send = super::sending::new_send(&version.version, send_key, Some(contact_id), None, Some(context), now);
        let tx = self.db.begin_write().await?;
        self.queue_in(&tx, ctx, &[send], "email.send_queued").await?;
        tx.commit().await?;
        self.mail_wakeup.notify_one();
        Ok(())
    }
}

/// The center's own emails as first created; `{{ event.link }}` is the signed link.
const LINK_EMAIL: (&str, &str) = (
    "Your link to manage your preferences",
    "<p>Hello {{ contact.first_name | default(\"there\") }},</p>\n<p>Here is your link to manage which emails you get from us:</p>\n<p><a href=\"{{ event.link }}\">Manage my preferences</a></p>\n<p>If you did not ask for it, you can ignore this email.</p>",
);
const CONFIRMATION_EMAIL: (&str, &str) = (
    "Please confirm your subscription",
    "<p>Hello {{ contact.first_name | default(\"there\") }},</p>\n<p>Please confirm that you want to receive emails from us:</p>\n<p><a href=\"{{ event.link }}\">Yes, subscribe me</a></p>\n<p>If you did not sign up, ignore this email and you will hear nothing more.</p>",
);

fn page_decision(purpose: &Purpose, channel: Channel, status: ConsentStatus, language: &str) -> ConsentDecision {
    // The page shows built-in purposes in its language and admins' own purposes as written.
    let translated = if purpose.built_in { texts::purpose_wording(language, purpose.key.as_str()) } else { None };
    let (shown_in, label, description) = match translated {
        Some((label, description)) => (Some(language), label, description),
        None => (None, purpose.label.as_str(), purpose.description.as_deref()),
    };
    let text = format!("{label}\n{}", description.unwrap_or_default());
    ConsentDecision {
        purpose: purpose.key.clone(),
        channel,
        status,
        legal_basis: LegalBasis::Consent,
        source: ConsentSource::PreferenceCenter,
        captured_at: None,
        proof: ConsentProof {
            wording_id: WordingId::parse(&format!("purpose:{}", purpose.key.as_str())).ok(),
            wording_version: super::consents::wording_version(shown_in, &text),
            ..ConsentProof::default()
        },
    }
}

fn editable_field(key: &str, contact: &Contact, definitions: &[FieldDefinition]) -> Option<EditableField> {
    let profile = &contact.profile;
    let text = |value: Option<&str>| value.unwrap_or_default().to_owned();
    let built_in =
        |value: String| EditableField { key: key.to_owned(), label: None, input: "text", value, options: Vec::new() };
    match key {
        "first_name" => Some(built_in(text(profile.first_name.as_ref().map(PersonName::as_str)))),
        "last_name" => Some(built_in(text(profile.last_name.as_ref().map(PersonName::as_str)))),
        "country" => Some(built_in(text(profile.country.as_ref().map(CountryCode::as_str)))),
        "locale" => Some(built_in(text(profile.locale.as_ref().map(Locale::as_str)))),
        "time_zone" => Some(built_in(text(profile.time_zone.as_ref().map(TimeZone::as_str)))),
        _ => {
            let definition = definitions.iter().find(|definition| definition.key.as_str() == key)?;
            let value = contact.attributes.iter().find(|(field, _)| field.as_str() == key).map(|(_, value)| value);
            let input = field_input(key, definitions)?;
            let value = match (input, value) {
                ("checkbox", value) => {
                    if matches!(value, Some(FieldValue::Boolean(true))) {
                        "on".to_owned()
                    } else {
                        String::new()
                    }
                }
                ("number", value) => value.map(|value| value.to_json().to_string()).unwrap_or_default(),
                (_, value) => value.and_then(|value| value.to_json().as_str().map(str::to_owned)).unwrap_or_default(),
            };
            Some(EditableField {
                key: key.to_owned(),
                label: Some(definition.label.clone()),
                input,
                value,
                options: definition.enum_values.clone(),
            })
        }
    }
}

/// The contact change the form's fields ask for, if any; only editable fields are read.
fn field_changes(
    view: &PreferencesView,
    form: &PreferencesForm,
    definitions: &[FieldDefinition],
) -> Result<Option<ContactChanges>> {
    let mut changes = ContactChanges::default();
    let mut any = false;
    for field in &view.fields {
        let submitted = form.fields.iter().find(|(key, _)| *key == field.key).map(|(_, value)| value.trim().to_owned());
        // A checkbox left unticked is not sent at all.
        let submitted = match (field.input, submitted) {
            ("checkbox", value) => {
                value.filter(|value| !value.is_empty()).map_or_else(String::new, |_| "on".to_owned())
            }
            (_, Some(value)) => value,
            (_, None) => continue,
        };
        if submitted == field.value {
            continue;
        }
        any = true;
        set_typed_field(
            &mut changes,
            &field.key,
            field.input,
            &submitted,
            definitions,
            &format!("field.{}", field.key),
        )?;
    }
    Ok(any.then_some(changes))
}

/// The input a form shows for profile field `key`, if it is one: `text`, `number`, `date`,
/// `checkbox` or `select`.
pub(super) fn field_input(key: &str, definitions: &[FieldDefinition]) -> Option<&'static str> {
    if EDITABLE_PROFILE_FIELDS.contains(&key) {
        return Some("text");
    }
    let definition = definitions.iter().find(|definition| definition.key.as_str() == key)?;
    Some(match definition.field_type {
        FieldType::Boolean => "checkbox",
        FieldType::Number => "number",
        FieldType::Date => "date",
        FieldType::Enum => "select",
        _ => "text",
    })
}

/// Sets profile field `key` in `changes` from what a person typed into an `input` (an empty value
/// clears the field); `name` is how an error names the field.
pub(super) fn set_typed_field(
    changes: &mut ContactChanges,
    key: &str,
    input: &str,
    submitted: &str,
    definitions: &[FieldDefinition],
    name: &str,
) -> Result<()> {
    let invalid = |reason: String| Error::validation(name.to_owned(), reason);
    macro_rules! built_in {
        ($target:ident, $parse:expr) => {
            changes.$target = if submitted.is_empty() {
                Change::Clear
            } else {
                Change::Set($parse(submitted).map_err(|error| invalid(error.to_string()))?)
            }
        };
    }
    match key {
        "first_name" => built_in!(first_name, PersonName::parse),
        "last_name" => built_in!(last_name, PersonName::parse),
        "country" => built_in!(country, CountryCode::parse),
        "locale" => built_in!(locale, Locale::parse),
        "time_zone" => built_in!(time_zone, TimeZone::parse),
        key => {
            let value = match input {
                _ if submitted.is_empty() && input != "checkbox" => Value::Null,
                "checkbox" => Value::Bool(matches!(submitted, "on" | "true")),
                "number" => submitted
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| invalid("is not a number".to_owned()))?,
                _ => Value::String(submitted.to_owned()),
            };
            if let Some(definition) = definitions.iter().find(|definition| definition.key.as_str() == key)
                && !value.is_null()
            {
                definition.parse_value(&value).map_err(|error| invalid(error.to_string()))?;
            }
            changes.attributes.push((key.to_owned(), value));
        }
    }
    Ok(())
}

/// Each of `keys` names a field a person may fill in: a built-in profile field or a custom one.
pub(super) fn check_profile_fields(name: &str, keys: &[String], definitions: &[FieldDefinition]) -> Result<()> {
    match keys.iter().position(|key| field_input(key, definitions).is_none()) {
        Some(index) => Err(Error::validation(format!("{name}[{index}]"), "is not a profile field or a custom field")),
        None => Ok(()),
    }
}
