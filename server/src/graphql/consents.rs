//! Consents over GraphQL: recording a decision with its proof, the purposes, and the types that
//! show current consents and their history.

use super::guard::Allow;
use crate::domain::access::Permission;
use std::net::IpAddr;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{
    contacts::parse_contact_id,
    error::{GqlResult, parse_arg},
    request_of, services_of,
};
use crate::{
    domain::{
        clean_text,
        consent::{self, ConsentChange, ConsentProof, Purpose, UserAgent, WordingId, WordingVersion},
        key::Key,
    },
    service::consents::{ConsentDecision, NewPurpose},
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Channel", remote = "consent::Channel")]
pub enum ChannelValue {
    Email,
    Sms,
    Push,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ConsentStatus", remote = "consent::ConsentStatus")]
pub enum ConsentStatusValue {
    Granted,
    Denied,
    /// Double opt-in requested but not confirmed yet.
    Pending,
}

/// The lawful bases of GDPR article 6(1).
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "LegalBasis", remote = "consent::LegalBasis")]
pub enum LegalBasisValue {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
    LegitimateInterests,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ConsentSource", remote = "consent::ConsentSource")]
pub enum ConsentSourceValue {
    Api,
    Form,
    Import,
    PreferenceCenter,
    Admin,
    /// An unsubscribe link from an email: the one-click POST of RFC 8058 or the page.
    Unsubscribe,
}

/// One consent decision with its proof.
pub struct ConsentNode(pub ConsentChange);

#[Object(name = "Consent")]
impl ConsentNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn purpose(&self) -> &str {
        self.0.purpose.as_str()
    }

    async fn channel(&self) -> ChannelValue {
        self.0.channel.into()
    }

    async fn status(&self) -> ConsentStatusValue {
        self.0.status.into()
    }

    async fn legal_basis(&self) -> LegalBasisValue {
        self.0.legal_basis.into()
    }

    async fn source(&self) -> ConsentSourceValue {
        self.0.source.into()
    }

    /// When the person made the decision.
    async fn captured_at(&self) -> DateTime<Utc> {
        self.0.captured_at
    }

    /// When Rapport recorded it.
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }

    /// Often a staff member's or an import job's address: not for contact tokens.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn proof(&self) -> ProofNode<'_> {
        ProofNode(&self.0.proof)
    }
}

pub struct ProofNode<'a>(&'a ConsentProof);

#[Object(name = "ConsentProof")]
impl ProofNode<'_> {
    async fn ip(&self) -> Option<String> {
        self.0.ip.map(|ip| ip.to_string())
    }

    async fn user_agent(&self) -> Option<&str> {
        self.0.user_agent.as_ref().map(UserAgent::as_str)
    }

    /// The consent wording the person saw, and its version.
    async fn wording_id(&self) -> Option<&str> {
        self.0.wording_id.as_ref().map(WordingId::as_str)
    }

    async fn wording_version(&self) -> Option<&str> {
        self.0.wording_version.as_ref().map(WordingVersion::as_str)
    }
}

#[derive(SimpleObject)]
#[graphql(name = "ConsentPurpose")]
pub struct PurposeNode {
    key: String,
    label: String,
    description: Option<String>,
    /// marketing, analytics and profiling exist in every installation.
    built_in: bool,
    created_at: DateTime<Utc>,
}

impl From<Purpose> for PurposeNode {
    fn from(purpose: Purpose) -> Self {
        Self {
            key: purpose.key.to_string(),
            label: purpose.label,
            description: purpose.description,
            built_in: purpose.built_in,
            created_at: purpose.created_at,
        }
    }
}

#[derive(InputObject)]
pub struct ConsentProofInput {
    ip: Option<String>,
    user_agent: Option<String>,
    wording_id: Option<String>,
    /// Which version of the wording: any text up to 100 characters (`3`, `2024-05`, `en:3f2a…`).
    wording_version: Option<String>,
}

/// A consent decision with its proof.
#[derive(InputObject)]
pub struct ConsentInput {
    purpose: String,
    channel: ChannelValue,
    status: ConsentStatusValue,
    #[graphql(default_with = "LegalBasisValue::Consent")]
    legal_basis: LegalBasisValue,
    #[graphql(default_with = "ConsentSourceValue::Api")]
    source: ConsentSourceValue,
    /// When the person decided; defaults to now. May lie in the past (imports): the current
    /// state is always the decision captured last.
    captured_at: Option<DateTime<Utc>>,
    proof: Option<ConsentProofInput>,
}

impl ConsentInput {
    /// Parses the decision; `path` prefixes the names of offending fields (`consents[0].`).
    pub fn parse(self, path: &str) -> GqlResult<ConsentDecision> {
        let field = |name: &str| format!("{path}{name}");
        let proof = match self.proof {
            None => ConsentProof::default(),
            Some(proof) => ConsentProof {
                ip: proof.ip.map(|raw| parse_arg(&field("proof.ip"), raw.trim().parse::<IpAddr>())).transpose()?,
                user_agent: proof
                    .user_agent
                    .map(|raw| parse_arg(&field("proof.userAgent"), UserAgent::parse(&raw)))
                    .transpose()?,
                wording_id: proof
                    .wording_id
                    .map(|raw| parse_arg(&field("proof.wordingId"), WordingId::parse(&raw)))
                    .transpose()?,
                wording_version: proof
                    .wording_version
                    .map(|raw| parse_arg(&field("proof.wordingVersion"), WordingVersion::parse(&raw)))
                    .transpose()?,
            },
        };
        Ok(ConsentDecision {
            purpose: parse_arg(&field("purpose"), Key::parse(&self.purpose))?,
            channel: self.channel.into(),
            status: self.status.into(),
            legal_basis: self.legal_basis.into(),
            source: self.source.into(),
            captured_at: self.captured_at,
            proof,
        })
    }
}

#[derive(InputObject)]
pub struct SetConsentInput {
    contact_id: ID,
    #[graphql(flatten)]
    decision: ConsentInput,
}

#[derive(InputObject)]
pub struct DefinePurposeInput {
    key: String,
    label: String,
    description: Option<String>,
}

#[derive(Default)]
pub struct ConsentQuery;

#[Object]
impl ConsentQuery {
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn consent_purposes(&self, ctx: &Context<'_>) -> GqlResult<Vec<PurposeNode>> {
        Ok(services_of(ctx)?.list_purposes().await?.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct ConsentMutation;

#[Object]
impl ConsentMutation {
    /// Records a consent decision; it is appended to the history, and becomes the current
    /// consent unless a decision captured later exists.
    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesWrite, Some(input.contact_id.to_string()))")]
    async fn set_consent(&self, ctx: &Context<'_>, input: SetConsentInput) -> GqlResult<ConsentNode> {
        let contact_id = parse_contact_id("contactId", &input.contact_id)?;
        let decision = input.decision.parse("")?;
        let change = services_of(ctx)?.record_consent(request_of(ctx)?, contact_id, decision).await?;
        Ok(ConsentNode(change))
    }

    /// Adds a consent purpose next to the built-in ones.
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn define_consent_purpose(&self, ctx: &Context<'_>, input: DefinePurposeInput) -> GqlResult<PurposeNode> {
        let new = NewPurpose {
            key: parse_arg("key", Key::parse(&input.key))?,
            label: parse_arg("label", clean_text(&input.label, 200))?,
            description: input.description.map(|raw| parse_arg("description", clean_text(&raw, 2_000))).transpose()?,
        };
        Ok(services_of(ctx)?.define_purpose(request_of(ctx)?, new).await?.into())
    }
}
