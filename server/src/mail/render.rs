//! Renders an email version for one contact, and checks a version's templates when it is saved.
//! Templates see `contact` (profile, custom fields, topics, consents) and `event` (the
//! triggering event's properties, when there is one); the shape of that context and the check
//! of what templates refer to live here together, so that they cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use minijinja::{Environment, Value};
use serde_json::Map;

use super::template::{self, CappedOutput, Part};
use crate::domain::{
    consent::{Channel, ConsentChange},
    contact::{Attributes, Contact, ContactId, Profile},
    email::{EmailContent, EmailVersion, RenderedEmail},
    field::FieldValue,
    topic::{Topic, TopicSubscription},
};

/// What a template can see about its recipient and the reason for the mail.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub contact: &'a Contact,
    pub topics: &'a [(TopicSubscription, Topic)],
    /// The contact's current consents (the latest decision per purpose and channel).
    pub consents: &'a [ConsentChange],
    /// Properties of the event that triggered the send, if one did.
    pub event: Option<&'a Map<String, serde_json::Value>>,
    /// The recipient's own links, as templates see them under `links`.
    pub links: &'a Links,
}

/// A recipient's links to the pages about them: `{{ links.preferences }}` and
/// `{{ links.unsubscribe }}`. Empty where there is no contact to link to (a check, a test).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Links {
    pub preferences: Option<String>,
    pub unsubscribe: Option<String>,
}

const NO_LINKS: Links = Links { preferences: None, unsubscribe: None };

/// Why a part could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{part}: {failure}")]
pub struct RenderError {
    /// `subject`, `preheader`, `html` or `text`.
    pub part: &'static str,
    pub failure: RenderFailure,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderFailure {
    /// A mistake in the template whatever the data: bad syntax, an unknown filter or function.
    #[error("{message} (line {line}, column {column})")]
    Syntax { message: String, line: usize, column: usize },
    /// `required(...)` found nothing and no `fallback` block surrounds it.
    #[error("{what} is missing and no fallback block surrounds it{}", at_line(*line))]
    MissingData { what: String, line: Option<usize> },
    #[error("the template ran more than {} steps (a loop too long, or one without end)", template::FUEL)]
    TooMuchWork,
    #[error("the output is larger than {} bytes", template::MAX_OUTPUT_BYTES)]
    TooLarge,
    #[error("renders empty")]
    Empty,
    /// Any other failure while rendering, such as adding text to a number.
    #[error("{message}{}", at_line(*line))]
    Template { message: String, line: Option<usize> },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" (line {line})")).unwrap_or_default()
}

impl RenderError {
    pub fn new(part: Part, failure: RenderFailure) -> Self {
        Self { part: part.name(), failure }
    }
}

/// Renders `version` for one recipient. Senders of many messages of one version compile it
/// once with [`CompiledEmail`] instead.
pub fn render(version: &EmailVersion, input: RenderInput<'_>) -> Result<RenderedEmail, RenderError> {
    CompiledEmail::compile(&version.content)?.render(input)
}

/// The parts of one version, parsed once and rendered for any number of recipients.
pub struct CompiledEmail {
    environment: Environment<'static>,
    parts: Vec<Part>,
}

impl CompiledEmail {
    pub fn compile(content: &EmailContent) -> Result<Self, RenderError> {
        let mut environment = template::environment();
        let sources = [
            (Part::Subject, Some(&content.subject)),
            (Part::Preheader, content.preheader.as_ref()),
            (Part::Html, Some(&content.html)),
            (Part::Text, content.text.as_ref()),
        ];
        let mut parts = Vec::new();
        for (part, source) in sources {
            if let Some(source) = source {
                environment
                    .add_template_owned(part.name(), source.clone())
                    .map_err(|error| template::classify(part, source, &error))?;
                parts.push(part);
            }
        }
        Ok(Self { environment, parts })
    }

    pub fn render(&self, input: RenderInput<'_>) -> Result<RenderedEmail, RenderError> {
        self.render_with(input, |html, make_text| {
            let text = make_text.then(|| super::text::from_html(&html));
            (html, text)
        })
    }

    /// Renders, handing the HTML to `finish`, which returns the HTML to send and, when asked
    /// (the version has no text part of its own), the text part made from the HTML as rendered:
    /// delivery rewrites the links for tracking and makes the text part in one pass.
    pub fn render_with(
        &self,
        input: RenderInput<'_>,
        finish: impl FnOnce(String, bool) -> (String, Option<String>),
    ) -> Result<RenderedEmail, RenderError> {
        let data = context(&input);
        let one_line = |part| -> Result<Option<String>, RenderError> {
            if !self.parts.contains(&part) {
                return Ok(None);
            }
            // Line breaks from `{% if %}` blocks have no place in a header.
            let line = self.part(part, &data)?.split_whitespace().collect::<Vec<_>>().join(" ");
            Ok(Some(line))
        };
        let subject = one_line(Part::Subject)?.filter(|subject| !subject.is_empty());
        let preheader = one_line(Part::Preheader)?.filter(|preheader| !preheader.is_empty());
        let written = if self.parts.contains(&Part::Text) { Some(self.part(Part::Text, &data)?) } else { None };
        let (html, made) = finish(self.part(Part::Html, &data)?, written.is_none());
        // A `finish` that made no text when asked gets the text of the HTML it returned.
        let text = written.or(made).unwrap_or_else(|| super::text::from_html(&html));
        Ok(RenderedEmail {
            subject: subject.ok_or(RenderError::new(Part::Subject, RenderFailure::Empty))?,
            preheader,
            html,
            text,
        })
    }

    fn part(&self, part: Part, data: &Value) -> Result<String, RenderError> {
        let template =
            self.environment.get_template(part.name()).map_err(|error| template::classify(part, "", &error))?;
        let mut output = CappedOutput::default();
        template
            .render_captured_to(data, &mut output)
            .map_err(|error| template::classify(part, template.source(), &error))?;
        Ok(output.into_string())
    }

    /// Whether any part refers to `path` (such as `links.preferences`), or to all of it.
    pub fn refers_to(&self, path: &str) -> bool {
        let parent = path.rsplit_once('.').map(|(parent, _)| parent);
        self.parts.iter().filter_map(|part| self.environment.get_template(part.name()).ok()).any(|template| {
            template.undeclared_variables(true).iter().any(|used| used == path || Some(used.as_str()) == parent)
        })
    }

    /// What each part refers to that no contact can have, as `part: warning` lines.
    fn unknown_references(&self, vocabulary: &Vocabulary) -> Vec<String> {
        let globals: BTreeSet<&str> = self.environment.globals().map(|(name, _)| name).collect();
        let mut warnings = Vec::new();
        for part in &self.parts {
            let Ok(template) = self.environment.get_template(part.name()) else { continue };
            let mut paths: Vec<String> = template.undeclared_variables(true).into_iter().collect();
            paths.sort();
            warnings.extend(
                paths
                    .iter()
                    .filter_map(|path| unknown_reference(path, vocabulary, &globals))
                    .map(|warning| format!("{}: {warning}", part.name())),
            );
        }
        warnings
    }
}

/// A contact without any data: what a check renders for, and a test send without a contact,
/// so that every fallback shows.
pub fn blank_contact() -> Contact {
    Contact {
        id: ContactId::from_uuid(uuid::Uuid::nil()),
        external_id: None,
        email: None,
        profile: Profile::default(),
        attributes: Attributes::new(),
        created_at: DateTime::UNIX_EPOCH,
        updated_at: DateTime::UNIX_EPOCH,
        version: 1,
    }
}

/// What exists for templates to refer to, besides the built-in contact fields.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Keys of the custom fields defined.
    pub fields: BTreeSet<String>,
    pub topics: BTreeSet<String>,
    pub purposes: BTreeSet<String>,
}

/// Checks the templates of a version before it is saved. A template that cannot work for
/// anyone (bad syntax, an unknown filter, a loop or output past the limits even without data)
/// is an error. What may work for some contacts and not for others comes back as warnings:
/// references to fields, topics or purposes that do not exist, and failures when rendered for
/// a contact with no data at all.
pub fn check(content: &EmailContent, vocabulary: &Vocabulary) -> Result<Vec<String>, RenderError> {
    let compiled = CompiledEmail::compile(content)?;
    let mut warnings = compiled.unknown_references(vocabulary);
    let blank = blank_contact();
    let data = context(&RenderInput { contact: &blank, topics: &[], consents: &[], event: None, links: &NO_LINKS });
    for part in &compiled.parts {
        let failure = match compiled.part(*part, &data) {
            Ok(output) if *part == Part::Subject && output.trim().is_empty() => RenderFailure::Empty,
            Ok(_) => continue,
            Err(error) => error.failure,
        };
        match failure {
            RenderFailure::Syntax { .. } | RenderFailure::TooMuchWork | RenderFailure::TooLarge => {
                return Err(RenderError::new(*part, failure));
            }
            RenderFailure::MissingData { what, line } => warnings.push(format!(
                "{}: contacts without {what} cannot be sent this email: required() outside a fallback block fails{}",
                part.name(),
                at_line(line)
            )),
            other => warnings.push(format!("{}: {other} for a contact with no data", part.name())),
        }
    }
    Ok(warnings)
}

/// The fields of `contact` in templates, in the order the context lists them.
pub const CONTACT_FIELDS: [&str; 12] = [
    "id",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "locale",
    "time_zone",
    "country",
    "attributes",
    "topics",
    "consents",
];

/// The fields of each entry of `contact.topics`.
pub const TOPIC_FIELDS: [&str; 4] = ["name", "subscribed", "status", "frequency"];

/// Why a dotted path that a template looks up may find nothing, if it may.
fn unknown_reference(path: &str, vocabulary: &Vocabulary, globals: &BTreeSet<&str>) -> Option<String> {
    let segments: Vec<&str> = path.split('.').collect();
    match segments.as_slice() {
        ["contact"] | ["contact", "attributes" | "topics" | "consents"] | ["event", ..] => None,
        ["links"] | ["links", "preferences" | "unsubscribe"] => None,
        ["links", other, ..] => Some(format!("links.{other} is not defined: links are preferences and unsubscribe")),
        [name] if globals.contains(name) => None,
        [name, ..] if *name != "contact" => {
            let hint =
                if CONTACT_FIELDS.contains(name) { format!(" (did you mean contact.{name}?)") } else { String::new() };
            Some(format!("{name} is not defined: templates see contact, event and links{hint}"))
        }
        ["contact", "attributes", key, ..] => (!vocabulary.fields.contains(*key))
            .then(|| format!("contact.attributes.{key}: no custom field {key} is defined")),
        ["contact", "topics", key, rest @ ..] => {
            if !vocabulary.topics.contains(*key) {
                Some(format!("contact.topics.{key}: no topic {key} is defined"))
            } else {
                rest.first()
                    .filter(|field| !TOPIC_FIELDS.contains(field))
                    .map(|field| format!("contact.topics.{key}.{field}: a topic has {}", TOPIC_FIELDS.join(", ")))
            }
        }
        ["contact", "consents", purpose, rest @ ..] => {
            if !vocabulary.purposes.contains(*purpose) {
                Some(format!("contact.consents.{purpose}: no consent purpose {purpose} is defined"))
            } else {
                rest.first().filter(|channel| channel.parse::<Channel>().is_err()).map(|channel| {
                    let channels: Vec<&str> = Channel::ALL.iter().map(|channel| channel.as_str()).collect();
                    format!("contact.consents.{purpose}.{channel}: channels are {}", channels.join(", "))
                })
            }
        }
        ["contact", field, ..] => (!CONTACT_FIELDS.contains(field))
            .then(|| format!("contact.{field} is not a contact field ({})", CONTACT_FIELDS.join(", "))),
        _ => None,
    }
}

fn context(input: &RenderInput<'_>) -> Value {
    let mut data = vec![("contact", contact_value(input)), ("links", Value::from_serialize(input.links))];
    if let Some(event) = input.event {
        data.push(("event", Value::from_serialize(event)));
    }
    Value::from_iter(data)
}

fn text<T>(value: Option<&T>, as_str: impl Fn(&T) -> &str) -> Value {
    value.map_or(Value::from(()), |value| Value::from(as_str(value)))
}

fn contact_value(input: &RenderInput<'_>) -> Value {
    let contact = input.contact;
    let profile = &contact.profile;
    let attributes: Vec<(&str, Value)> =
        contact.attributes.iter().map(|(key, value)| (key.as_str(), field_value(value))).collect();
    let topics: Vec<(&str, Value)> = input
        .topics
        .iter()
        .filter(|(subscription, _)| subscription.contact_id == contact.id)
        .map(|(subscription, topic)| {
            let fields: [Value; 4] = [
                Value::from(topic.name.as_str()),
                Value::from(subscription.status == crate::domain::topic::SubscriptionStatus::Subscribed),
                Value::from(subscription.status.as_str()),
                Value::from(subscription.frequency.as_str()),
            ];
            (topic.key.as_str(), Value::from_iter(TOPIC_FIELDS.into_iter().zip(fields)))
        })
        .collect();
    let mut consents: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for consent in input.consents.iter().filter(|consent| consent.contact_id == contact.id) {
        consents.entry(consent.purpose.as_str()).or_default().push((consent.channel.as_str(), consent.status.as_str()));
    }
    let fields: [Value; 12] = [
        Value::from(contact.id.to_string()),
        text(contact.external_id.as_ref(), |id| id.as_str()),
        text(contact.email.as_ref(), |email| email.as_str()),
        text(profile.phone.as_ref(), |phone| phone.as_str()),
        text(profile.first_name.as_ref(), |name| name.as_str()),
        text(profile.last_name.as_ref(), |name| name.as_str()),
        text(profile.locale.as_ref(), |locale| locale.as_str()),
        text(profile.time_zone.as_ref(), |zone| zone.as_str()),
        text(profile.country.as_ref(), |country| country.as_str()),
        Value::from_iter(attributes),
        Value::from_iter(topics),
        Value::from_iter(consents.into_iter().map(|(purpose, channels)| (purpose, Value::from_iter(channels)))),
    ];
    Value::from_iter(CONTACT_FIELDS.into_iter().zip(fields))
}

/// Whole numbers print without a decimal point ("120 points", not "120.0 points").
fn field_value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Number(number) if number.fract() == 0.0 && number.abs() < 9_007_199_254_740_992.0 => {
            Value::from(*number as i64)
        }
        other => Value::from_serialize(other.to_json()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{
        consent::{ConsentProof, ConsentSource, ConsentStatus, LegalBasis},
        contact::PersonName,
        key::Key,
        topic::{Frequency, SubscriptionStatus},
    };

    fn content(subject: &str, html: &str) -> EmailContent {
        EmailContent { subject: subject.into(), preheader: None, html: html.into(), text: None }
    }

    fn contact(first_name: Option<&str>) -> Contact {
        let mut attributes = Attributes::new();
        attributes.insert(Key::parse("points").unwrap(), FieldValue::Number(120.0));
        Contact {
            id: ContactId::generate(),
            external_id: None,
            email: None,
            profile: Profile {
                first_name: first_name.map(|name| PersonName::parse(name).unwrap()),
                ..Profile::default()
            },
            attributes,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
        }
    }

    fn render_for(content: &EmailContent, contact: &Contact) -> Result<RenderedEmail, RenderError> {
        CompiledEmail::compile(content)?.render(RenderInput {
            contact,
            topics: &[],
            consents: &[],
            event: None,
            links: &NO_LINKS,
        })
    }

    #[test]
    fn the_context_lists_every_contact_field_the_check_knows() {
        let contact = contact(Some("Ada"));
        let value = contact_value(&RenderInput {
            contact: &contact,
            topics: &[],
            consents: &[],
            event: None,
            links: &NO_LINKS,
        });
        let keys: Vec<String> = value.try_iter().unwrap().map(|key| key.to_string()).collect();
        let mut expected: Vec<&str> = CONTACT_FIELDS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
    }

    #[test]
    fn topics_and_consents_are_keyed_by_topic_and_purpose() {
        let contact = contact(None);
        let topic = Topic {
            id: Uuid::now_v7(),
            key: Key::parse("digest").unwrap(),
            name: "Digest".into(),
            description: None,
            default_frequency: Frequency::Weekly,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let subscription = TopicSubscription {
            contact_id: contact.id,
            topic_id: topic.id,
            status: SubscriptionStatus::Subscribed,
            frequency: Frequency::Daily,
            updated_at: Utc::now(),
        };
        let consent = ConsentChange {
            id: Uuid::now_v7(),
            contact_id: contact.id,
            purpose: Key::parse("marketing").unwrap(),
            channel: Channel::Email,
            status: ConsentStatus::Granted,
            legal_basis: LegalBasis::Consent,
            source: ConsentSource::Api,
            captured_at: Utc::now(),
            recorded_at: Utc::now(),
            proof: ConsentProof::default(),
        };
        let html = "{{ contact.topics.digest.name }} {{ contact.topics.digest.frequency }} \
            {% if contact.topics.digest.subscribed %}in{% endif %} {{ contact.consents.marketing.email }} \
            {{ contact.consents.marketing.sms | default(\"unknown\") }} {{ contact.attributes.points }}";
        let compiled = CompiledEmail::compile(&content("Hi", html)).unwrap();
        let topics = [(subscription, topic)];
        let consents = [consent];
        let rendered = compiled
            .render(RenderInput {
                contact: &contact,
                topics: &topics,
                consents: &consents,
                event: None,
                links: &NO_LINKS,
            })
            .unwrap();
        assert_eq!(rendered.html, "Digest daily in granted unknown 120");
    }

    #[test]
    fn subjects_are_one_line_and_an_empty_one_is_an_error() {
        let subject = "{% if contact.first_name %}\n  Hi {{ contact.first_name }}\n{% endif %}";
        let rendered = render_for(&content(subject, "<p>x</p>"), &contact(Some("Ada"))).unwrap();
        assert_eq!(rendered.subject, "Hi Ada");
        assert_eq!(
            render_for(&content(subject, "<p>x</p>"), &contact(None)),
            Err(RenderError::new(Part::Subject, RenderFailure::Empty))
        );
    }

    #[test]
    fn a_text_part_is_generated_from_the_html_with_its_links() {
        let html =
            "<h1>Hello {{ contact.first_name }}</h1><p>Read <a href=\"https://example.com/news\">the news</a>.</p>";
        let rendered = render_for(&content("Hi", html), &contact(Some("Ada"))).unwrap();
        assert!(rendered.text.contains("Hello Ada"), "{}", rendered.text);
        assert!(rendered.text.contains("https://example.com/news"), "{}", rendered.text);
        assert!(!rendered.text.contains("<p>"), "{}", rendered.text);
    }

    #[test]
    fn links_are_known_to_the_check_and_render_for_the_recipient() {
        let content = content("Hi", "<a href=\"{{ links.preferences }}\">p</a>{{ links.nope }}");
        let warnings = check(&content, &Vocabulary::default()).unwrap();
        assert_eq!(warnings, ["html: links.nope is not defined: links are preferences and unsubscribe"]);
        let links = Links { preferences: Some("https://x.example/preferences/t".to_owned()), unsubscribe: None };
        let contact = contact(Some("Ada"));
        let input = RenderInput { contact: &contact, topics: &[], consents: &[], event: None, links: &links };
        let rendered = CompiledEmail::compile(&content).unwrap().render(input).unwrap();
        assert!(
            rendered.html.starts_with("<a href=\"https:&#x2f;&#x2f;x.example&#x2f;preferences&#x2f;t\">"),
            "{}",
            rendered.html
        );
    }

    #[test]
    fn the_check_warns_of_unknown_fields_topics_purposes_and_names() {
        let vocabulary = Vocabulary {
            fields: ["tier".to_owned()].into(),
            topics: ["digest".to_owned()].into(),
            purposes: ["marketing".to_owned()].into(),
        };
        let html = "{{ contact.frist_name }}{{ contact.attributes.tier }}{{ contact.attributes.nope }}\
            {{ contact.topics.digest.status }}{{ contact.topics.news }}{{ contact.consents.marketing.fax }}\
            {{ first_name }}{{ event.total }}{% for topic in range(2) %}{{ loop.index }}{% endfor %}";
        let warnings = check(&content("Hi {{ contact.first_name | default('there') }}", html), &vocabulary).unwrap();
        assert_eq!(
            warnings,
            [
                "html: contact.attributes.nope: no custom field nope is defined",
                "html: contact.consents.marketing.fax: channels are email, sms, push",
                "html: contact.frist_name is not a contact field (id, external_id, email, phone, first_name, last_name, locale, time_zone, country, attributes, topics, consents)",
                "html: contact.topics.news: no topic news is defined",
                "html: first_name is not defined: templates see contact, event and links (did you mean contact.first_name?)",
            ]
        );
    }

    #[test]
    fn the_check_refuses_what_fails_for_everyone_and_warns_of_what_fails_without_data() {
        let vocabulary = Vocabulary::default();
        let looping = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert_eq!(
            check(&content("Hi", looping), &vocabulary),
            Err(RenderError::new(Part::Html, RenderFailure::TooMuchWork))
        );
        let warnings = check(
            &content("{{ contact.first_name }}", "<p>{{ required(contact.email, \"an email\") }}</p>"),
            &vocabulary,
        )
        .unwrap();
        assert_eq!(
            warnings,
            [
                "subject: renders empty for a contact with no data",
                "html: contacts without an email cannot be sent this email: required() outside a fallback block fails (line 1)",
            ]
        );
    }
}
