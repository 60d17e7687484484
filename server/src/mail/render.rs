//! Renders an email version for one contact with minijinja. The HTML part auto-escapes every
//! value, so data can never inject markup.

use minijinja::{AutoEscape, Environment, context};
use serde_json::{Map, Value};

use crate::domain::{
    contact::Contact,
    email::{EmailVersion, RenderedEmail},
    topic::{Topic, TopicSubscription},
};

/// What a template can see about its recipient and the reason for the mail.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub contact: &'a Contact,
    pub topics: &'a [(TopicSubscription, Topic)],
    /// Properties of the event that triggered the send, if one did.
    pub event: Option<&'a Map<String, Value>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("{part}: {message}")]
    Template { part: &'static str, message: String },
}

pub fn render(version: &EmailVersion, input: RenderInput<'_>) -> Result<RenderedEmail, RenderError> {
    let mut environment = Environment::new();
    environment.set_auto_escape_callback(|name| if name == "html" { AutoEscape::Html } else { AutoEscape::None });
    let data = context! {
        contact => contact_value(input.contact),
        event => input.event.cloned().map(Value::Object).unwrap_or(Value::Null),
    };
    let part = |name: &'static str, source: &str| {
        environment
            .render_named_str(name, source, &data)
            .map_err(|error| RenderError::Template { part: name, message: error.to_string() })
    };
    let html = part("html", &version.content.html)?;
    Ok(RenderedEmail {
        subject: part("subject", &version.content.subject)?,
        preheader: version.content.preheader.as_deref().map(|preheader| part("preheader", preheader)).transpose()?,
        text: match &version.content.text {
            Some(text) => part("text", text)?,
            None => html.clone(),
        },
        html,
    })
}

fn contact_value(contact: &Contact) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::from(contact.id.to_string()));
    object.insert("email".into(), contact.email.as_ref().map_or(Value::Null, |email| Value::from(email.as_str())));
    object.insert(
        "first_name".into(),
        contact.profile.first_name.as_ref().map_or(Value::Null, |name| Value::from(name.as_str())),
    );
    object.insert(
        "last_name".into(),
        contact.profile.last_name.as_ref().map_or(Value::Null, |name| Value::from(name.as_str())),
    );
    Value::Object(object)
}
