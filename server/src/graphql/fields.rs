//! Custom field definitions over GraphQL.

use super::guard::Allow;
use crate::domain::access::Permission;
use async_graphql::{Context, Enum, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{
    error::{GqlResult, parse_arg},
    request_of, services_of,
};
use crate::{
    domain::{
        clean_text,
        field::{self, FieldDefinition},
        key::Key,
    },
    service::fields::{FieldAlteration, NewField},
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "FieldType", remote = "field::FieldType")]
pub enum FieldTypeValue {
    String,
    Number,
    Boolean,
    /// A calendar date, written as YYYY-MM-DD.
    Date,
    /// An instant, written in RFC 3339.
    DateTime,
    /// One of a fixed list of strings.
    Enum,
}

pub struct FieldNode(pub FieldDefinition);

#[Object(name = "FieldDefinition")]
impl FieldNode {
    async fn key(&self) -> &str {
        self.0.key.as_str()
    }

    async fn label(&self) -> &str {
        &self.0.label
    }

    #[graphql(name = "type")]
    async fn field_type(&self) -> FieldTypeValue {
        self.0.field_type.into()
    }

    async fn enum_values(&self) -> &[String] {
        &self.0.enum_values
    }

    async fn required(&self) -> bool {
        self.0.required
    }

    /// Personal data: encrypted at rest and part of GDPR exports.
    async fn personal(&self) -> bool {
        self.0.personal
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(InputObject)]
pub struct DefineFieldInput {
    key: String,
    label: String,
    #[graphql(name = "type")]
    field_type: FieldTypeValue,
    enum_values: Option<Vec<String>>,
    #[graphql(default)]
    required: bool,
    #[graphql(default)]
    personal: bool,
}

/// Fields left out are kept. The type of a field cannot change.
#[derive(InputObject)]
pub struct AlterFieldInput {
    key: String,
    label: Option<String>,
    /// The full new list; values still held by contacts cannot be removed.
    enum_values: Option<Vec<String>>,
    required: Option<bool>,
    personal: Option<bool>,
}

#[derive(Default)]
pub struct FieldQuery;

#[Object]
impl FieldQuery {
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn fields(&self, ctx: &Context<'_>) -> GqlResult<Vec<FieldNode>> {
        Ok(services_of(ctx)?.list_fields().await?.into_iter().map(FieldNode).collect())
    }
}

#[derive(Default)]
pub struct FieldMutation;

#[Object]
impl FieldMutation {
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn define_field(&self, ctx: &Context<'_>, input: DefineFieldInput) -> GqlResult<FieldNode> {
        let new = NewField {
            key: parse_arg("key", Key::parse(&input.key))?,
            label: parse_arg("label", clean_text(&input.label, 200))?,
            field_type: input.field_type.into(),
            enum_values: input.enum_values.unwrap_or_default(),
            required: input.required,
            personal: input.personal,
        };
        Ok(FieldNode(services_of(ctx)?.define_field(request_of(ctx)?, new).await?))
    }

    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn alter_field(&self, ctx: &Context<'_>, input: AlterFieldInput) -> GqlResult<FieldNode> {
        let key = parse_arg("key", Key::parse(&input.key))?;
        let alteration = FieldAlteration {
            label: input.label.map(|raw| parse_arg("label", clean_text(&raw, 200))).transpose()?,
            enum_values: input.enum_values,
            required: input.required,
            personal: input.personal,
        };
        Ok(FieldNode(services_of(ctx)?.alter_field(request_of(ctx)?, &key, alteration).await?))
    }

    /// Deletes the field and every contact's value of it. Returns the deleted key.
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn delete_field(&self, ctx: &Context<'_>, key: String) -> GqlResult<String> {
        let parsed = parse_arg("key", Key::parse(&key))?;
        services_of(ctx)?.delete_field(request_of(ctx)?, &parsed).await?;
        Ok(key)
    }
}
