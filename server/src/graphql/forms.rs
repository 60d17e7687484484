//! Signup forms over GraphQL: defining them, listing them, a contact's opt-in requests (with the
//! proof of each submission), and sending the confirmation email on request.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{
    contacts::parse_contact_id,
    error::{GqlResult, parse_arg},
    guard::Allow,
    request_of, services_of,
};
use crate::{
    domain::{
        access::Permission,
        forms::{self, OptInRequest, SignupForm},
        key::Key,
        preferences::parse_page_text,
    },
    service::forms::NewSignupForm,
};

#[derive(SimpleObject)]
#[graphql(name = "SignupForm")]
pub struct SignupFormNode {
    id: ID,
    /// The form posts to `/forms/{key}`.
    key: String,
    name: String,
    topics: Vec<String>,
    /// Profile fields the form asks for besides `email`, posted under their keys.
    fields: Vec<String>,
    wording: String,
    double_opt_in: bool,
    created_at: DateTime<Utc>,
}

impl From<SignupForm> for SignupFormNode {
    fn from(form: SignupForm) -> Self {
        Self {
            id: ID(form.id.to_string()),
            key: form.key.as_str().to_owned(),
            name: form.name,
            topics: form.topics.iter().map(|key| key.as_str().to_owned()).collect(),
            fields: form.fields,
            wording: form.wording,
            double_opt_in: form.double_opt_in,
            created_at: form.created_at,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum OptInRequestStatus {
    Pending,
    Confirmed,
    /// Not confirmed within seven days.
    Expired,
}

/// A submission to a double opt-in form, with the proof of the submission.
#[derive(SimpleObject)]
pub struct OptInRequestNode {
    id: ID,
    form_id: ID,
    topics: Vec<String>,
    status: OptInRequestStatus,
    submitted_ip: Option<String>,
    submitted_user_agent: Option<String>,
    submitted_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
}

impl OptInRequestNode {
    fn new(request: OptInRequest, now: DateTime<Utc>) -> Self {
        let status = match request.status {
            forms::OptInStatus::Confirmed => OptInRequestStatus::Confirmed,
            forms::OptInStatus::Pending if request.expires_at <= now => OptInRequestStatus::Expired,
            forms::OptInStatus::Pending => OptInRequestStatus::Pending,
        };
        Self {
            id: ID(request.id.to_string()),
            form_id: ID(request.form_id.to_string()),
            topics: request.topics.iter().map(|key| key.as_str().to_owned()).collect(),
            status,
            submitted_ip: request.submitted_ip.map(|ip| ip.to_string()),
            submitted_user_agent: request.submitted_user_agent.map(|agent| agent.as_str().to_owned()),
            submitted_at: request.submitted_at,
            expires_at: request.expires_at,
            confirmed_at: request.confirmed_at,
        }
    }
}

#[derive(InputObject)]
pub struct CreateSignupFormInput {
    key: String,
    name: String,
    /// Topic keys the form subscribes to.
    topics: Vec<String>,
    /// Profile fields the form asks for besides `email` (built-in such as `first_name`,
    /// `country`, or custom field keys); they fill in new contacts only.
    #[graphql(default_with = "vec![\"first_name\".to_owned()]")]
    fields: Vec<String>,
    /// The consent text the form shows; recorded as the wording of the decisions it makes.
    wording: String,
    #[graphql(default = true)]
    double_opt_in: bool,
}

#[derive(Default)]
pub struct FormQuery;

#[Object]
impl FormQuery {
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn signup_forms(&self, ctx: &Context<'_>) -> GqlResult<Vec<SignupFormNode>> {
        Ok(services_of(ctx)?.signup_forms().await?.into_iter().map(SignupFormNode::from).collect())
    }

    /// A contact's opt-in requests, newest first.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn opt_in_requests(&self, ctx: &Context<'_>, contact_id: ID) -> GqlResult<Vec<OptInRequestNode>> {
        let contact_id = parse_contact_id("contactId", &contact_id)?;
        let services = services_of(ctx)?;
        // The services' clock decides expiry, as it did when the request was made.
        let now = services.now();
        let requests = services.opt_in_requests(request_of(ctx)?, contact_id).await?;
        Ok(requests.into_iter().map(|request| OptInRequestNode::new(request, now)).collect())
    }
}

#[derive(Default)]
pub struct FormMutation;

#[Object]
impl FormMutation {
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn create_signup_form(&self, ctx: &Context<'_>, input: CreateSignupFormInput) -> GqlResult<SignupFormNode> {
        let new = NewSignupForm {
            key: parse_arg("input.key", Key::parse(&input.key))?,
            name: parse_arg("input.name", parse_page_text(&input.name))?,
            topics: input
                .topics
                .iter()
                .enumerate()
                .map(|(index, raw)| parse_arg(&format!("input.topics[{index}]"), Key::parse(raw)))
                .collect::<GqlResult<_>>()?,
            fields: input.fields,
            wording: parse_arg("input.wording", crate::domain::clean_text(&input.wording, 2_000))?,
            double_opt_in: input.double_opt_in,
        };
        Ok(services_of(ctx)?.create_signup_form(request_of(ctx)?, new).await?.into())
    }

    /// Sends the confirmation email of a form to a contact, e.g. one created through the API or
    /// an import with consent `PENDING`. A request still open for the form sends nothing more.
    #[graphql(guard = "Allow::to(Permission::ProfilesWrite)")]
    async fn request_opt_in_confirmation(&self, ctx: &Context<'_>, contact_id: ID, form: String) -> GqlResult<bool> {
        let contact_id = parse_contact_id("contactId", &contact_id)?;
        let form = parse_arg("form", Key::parse(&form))?;
        services_of(ctx)?.request_opt_in_confirmation(request_of(ctx)?, contact_id, &form).await?;
        Ok(true)
    }
}
