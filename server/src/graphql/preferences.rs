//! The preference center over GraphQL: its settings for admins, and `savePreferences` for the
//! page's script, which acts with the contact's own preferences token.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object, SimpleObject};

use super::{
    consents::ChannelValue,
    error::{GqlError, GqlResult, parse_arg},
    guard::Allow,
    request_of, services_of,
    topics::FrequencyValue,
};
use crate::{
    domain::{
        Change,
        access::Permission,
        contact::EmailAddress,
        key::Key,
        preferences::{PreferenceCenter, PreferencesForm, parse_color, parse_logo, parse_page_text},
        texts,
    },
    service::preferences::PreferenceCenterUpdate,
};

#[derive(SimpleObject)]
#[graphql(name = "PreferenceCenter")]
pub struct PreferenceCenterNode {
    company_name: String,
    /// A `data:` URL of the logo.
    logo: Option<String>,
    primary_color: String,
    footer_text: Option<String>,
    privacy_policy_url: Option<String>,
    /// Profile fields (`first_name`, `last_name`, `country`, `locale`, `time_zone`) and custom
    /// field keys that contacts may edit on their page, in display order.
    editable_fields: Vec<String>,
    sender_name: Option<String>,
    sender_address: Option<String>,
    /// The email sent when someone asks for a fresh link (`{{ event.link }}` is the link).
    link_email_id: Option<ID>,
    /// The email that asks a new subscriber to confirm (`{{ event.link }}` is the link).
    confirmation_email_id: Option<ID>,
}

impl From<PreferenceCenter> for PreferenceCenterNode {
    fn from(settings: PreferenceCenter) -> Self {
        Self {
            company_name: settings.company_name,
            logo: settings.logo,
            primary_color: settings.primary_color,
            footer_text: settings.footer_text,
            privacy_policy_url: settings.privacy_policy_url,
            editable_fields: settings.editable_fields,
            sender_name: settings.sender_name,
            sender_address: settings.sender_address,
            link_email_id: settings.link_email_id.map(|id| ID(id.to_string())),
            confirmation_email_id: settings.confirmation_email_id.map(|id| ID(id.to_string())),
        }
    }
}

/// What is left out stays as it is; `null` clears an optional setting.
#[derive(InputObject)]
pub struct UpdatePreferenceCenterInput {
    company_name: Option<String>,
    /// A `data:image/…;base64,…` URL of at most 16 KiB: the page loads nothing from elsewhere.
    logo: MaybeUndefined<String>,
    /// `#rrggbb`, dark enough for white text on it (WCAG AA, 4.5:1).
    primary_color: Option<String>,
    footer_text: MaybeUndefined<String>,
    privacy_policy_url: MaybeUndefined<String>,
    editable_fields: Option<Vec<String>>,
    sender_name: MaybeUndefined<String>,
    /// Setting the first sender creates the center's two emails.
    sender_address: MaybeUndefined<String>,
}

#[derive(InputObject)]
pub struct TopicFrequencyInput {
    topic: String,
    frequency: FrequencyValue,
}

#[derive(InputObject)]
pub struct GrantedConsentInput {
    purpose: String,
    channel: ChannelValue,
}

#[derive(InputObject)]
pub struct FieldValueInput {
    key: String,
    /// As typed; empty clears the field, `on` ticks a yes/no field.
    value: String,
}

/// The whole state of the page's form, as the page would post it.
#[derive(InputObject)]
pub struct SavePreferencesInput {
    /// Keys of the topics ticked; the others are unsubscribed.
    subscribed: Vec<String>,
    frequencies: Vec<TopicFrequencyInput>,
    /// Consents ticked; a granted one left out is denied.
    granted: Vec<GrantedConsentInput>,
    fields: Vec<FieldValueInput>,
    /// The language the page was shown in (`en`, `de`), which words the built-in consent
    /// purposes; the consent proof names it. Left out, the contact's locale decides.
    language: Option<String>,
}

#[derive(Default)]
pub struct PreferenceQuery;

#[Object]
impl PreferenceQuery {
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn preference_center(&self, ctx: &Context<'_>) -> GqlResult<PreferenceCenterNode> {
        Ok(services_of(ctx)?.preference_center().await?.into())
    }
}

#[derive(Default)]
pub struct PreferenceMutation;

/// A setting that may be left out (kept), null (cleared) or given (parsed).
fn change<T>(value: MaybeUndefined<String>, parse: impl Fn(&str) -> GqlResult<T>) -> GqlResult<Change<T>> {
    Ok(match value {
        MaybeUndefined::Undefined => Change::Keep,
        MaybeUndefined::Null => Change::Clear,
        MaybeUndefined::Value(raw) => Change::Set(parse(&raw)?),
    })
}

#[Object]
impl PreferenceMutation {
    /// Branding, editable fields and sender of the preference center.
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn update_preference_center(
        &self,
        ctx: &Context<'_>,
        input: UpdatePreferenceCenterInput,
    ) -> GqlResult<PreferenceCenterNode> {
        let text = |field: &'static str| move |raw: &str| parse_arg(field, parse_page_text(raw));
        let update = PreferenceCenterUpdate {
            company_name: input.company_name.map(|raw| text("input.companyName")(&raw)).transpose()?,
            logo: change(input.logo, |raw| parse_arg("input.logo", parse_logo(raw)))?,
            primary_color: input
                .primary_color
                .map(|raw| parse_arg("input.primaryColor", parse_color(&raw)))
                .transpose()?,
            footer_text: change(input.footer_text, text("input.footerText"))?,
            privacy_policy_url: change(input.privacy_policy_url, |raw| {
                let url =
                    url::Url::parse(raw).map_err(|_| GqlError::bad_input("input.privacyPolicyUrl", "is not a URL"))?;
                if !matches!(url.scheme(), "https" | "http") {
                    return Err(GqlError::bad_input("input.privacyPolicyUrl", "must be an http(s) URL"));
                }
                Ok(url.to_string())
            })?,
            editable_fields: input.editable_fields,
            sender_name: change(input.sender_name, text("input.senderName"))?,
            sender_address: change(input.sender_address, |raw| {
                parse_arg("input.senderAddress", EmailAddress::parse(raw))
            })?,
        };
        Ok(services_of(ctx)?.update_preference_center(request_of(ctx)?, update).await?.into())
    }

    /// Saves a contact's own page: only with that contact's preferences token.
    async fn save_preferences(&self, ctx: &Context<'_>, input: SavePreferencesInput) -> GqlResult<bool> {
        let key = |field: String, raw: &str| parse_arg(&field, Key::parse(raw));
        let form = PreferencesForm {
            subscribed: input
                .subscribed
                .iter()
                .enumerate()
                .map(|(index, raw)| key(format!("input.subscribed[{index}]"), raw))
                .collect::<GqlResult<_>>()?,
            frequencies: input
                .frequencies
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    Ok((key(format!("input.frequencies[{index}].topic"), &item.topic)?, item.frequency.into()))
                })
                .collect::<GqlResult<_>>()?,
            granted: input
                .granted
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    Ok((key(format!("input.granted[{index}].purpose"), &item.purpose)?, item.channel.into()))
                })
                .collect::<GqlResult<_>>()?,
            fields: input.fields.into_iter().map(|field| (field.key, field.value)).collect(),
            language: input
                .language
                .map(|raw| {
                    texts::spoken(&raw).ok_or_else(|| GqlError::bad_input("input.language", "is not spoken here"))
                })
                .transpose()?,
        };
        services_of(ctx)?.save_preferences(request_of(ctx)?, form).await?;
        Ok(true)
    }
}
