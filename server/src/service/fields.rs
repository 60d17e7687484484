//! Defining and altering custom fields. A field's type never changes once defined: stored values
//! depend on it. Enum values still held by contacts cannot be removed.

use tracing::instrument;

use serde_json::{Value, json};

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    domain::{
        field::{FieldDefinition, FieldType},
        key::Key,
    },
    store,
};

#[derive(Debug, Clone)]
pub struct NewField {
    pub key: Key,
    pub label: String,
    pub field_type: FieldType,
    pub enum_values: Vec<String>,
    pub required: bool,
    pub personal: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FieldAlteration {
    pub label: Option<String>,
    pub enum_values: Option<Vec<String>>,
    pub required: Option<bool>,
    pub personal: Option<bool>,
}

impl Services {
    pub async fn list_fields(&self) -> Result<Vec<FieldDefinition>> {
        Ok(store::fields::all(self.db.connection()).await?)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %new.key))]
    pub async fn define_field(&self, ctx: &RequestContext, new: NewField) -> Result<FieldDefinition> {
        let enum_values = FieldDefinition::check_enum_values(new.field_type, &new.enum_values)
            .map_err(|error| Error::validation("enumValues", error))?;
        let now = self.now();
        let definition = FieldDefinition {
            key: new.key,
            label: new.label,
            field_type: new.field_type,
            enum_values,
            required: new.required,
            personal: new.personal,
            created_at: now,
            updated_at: now,
        };
        let tx = self.db.begin_write().await?;
        store::fields::insert(&tx, &definition).await?;
        let changes = field_changes(None, Some(&definition));
        audit::append(&tx, ctx, now, audit::Entry::new("field.defined", "field", definition.key.as_str(), changes))
            .await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(definition)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %key))]
    pub async fn alter_field(
        &self,
        ctx: &RequestContext,
        key: &Key,
        alteration: FieldAlteration,
    ) -> Result<FieldDefinition> {
        let tx = self.db.begin_write().await?;
        let mut definition = store::fields::find(&tx, key).await?.ok_or(Error::NotFound { what: "field" })?;
        let before = definition.clone();
        if let Some(values) = alteration.enum_values {
            let values = FieldDefinition::check_enum_values(definition.field_type, &values)
                .map_err(|error| Error::validation("enumValues", error))?;
            let removed: Vec<String> =
                definition.enum_values.iter().filter(|old| !values.contains(old)).cloned().collect();
            if !removed.is_empty() {
                let holders = store::fields::count_values_in_use(&tx, key, &removed).await?;
                if holders > 0 {
                    return Err(Error::Conflict {
                        field: Some("enumValues".to_owned()),
                        reason: format!("{holders} contact(s) still hold a removed value ({})", removed.join(", ")),
                    });
                }
            }
            definition.enum_values = values;
        }
        if let Some(label) = alteration.label {
            definition.label = label;
        }
        if let Some(required) = alteration.required {
            definition.required = required;
        }
        if let Some(personal) = alteration.personal {
            definition.personal = personal;
        }
        let now = self.now();
        definition.updated_at = now;
        store::fields::update(&tx, &definition).await?;
        let changes = field_changes(Some(&before), Some(&definition));
        audit::append(&tx, ctx, now, audit::Entry::new("field.altered", "field", key.as_str(), changes)).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(definition)
    }

    /// Removes the field and every value of it.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %key))]
    pub async fn delete_field(&self, ctx: &RequestContext, key: &Key) -> Result<()> {
        let tx = self.db.begin_write().await?;
        let existing = store::fields::find(&tx, key).await?.ok_or(Error::NotFound { what: "field" })?;
        if !store::fields::delete(&tx, key).await? {
            return Err(Error::NotFound { what: "field" });
        }
        let changes = field_changes(Some(&existing), None);
        audit::append(&tx, ctx, self.now(), audit::Entry::new("field.deleted", "field", key.as_str(), changes)).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(())
    }
}

/// A definition's settings before and after, for the audit log; none of them is personal.
fn field_changes(before: Option<&FieldDefinition>, after: Option<&FieldDefinition>) -> Changes {
    let settings = |definition: Option<&FieldDefinition>| -> [Option<Value>; 5] {
        match definition {
            None => [None, None, None, None, None],
            Some(definition) => [
                Some(json!(definition.label)),
                Some(json!(definition.field_type.as_str())),
                (!definition.enum_values.is_empty()).then(|| json!(definition.enum_values)),
                Some(json!(definition.required)),
                Some(json!(definition.personal)),
            ],
        }
    };
    let mut changes = Changes::new();
    for ((name, old), new) in
        ["label", "type", "enumValues", "required", "personal"].into_iter().zip(settings(before)).zip(settings(after))
    {
        changes.field(name, old, new);
    }
    changes
}
