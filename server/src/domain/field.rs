//! Custom fields: admins declare a key and a type, and every value written to a contact is parsed
//! against that declaration, so stored attributes are always well typed and segments can compare
//! them without guessing.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::{TextError, clean_text, key::Key, string_enum};

string_enum!(
    /// The type of a custom field; fixed once the field exists, since stored values depend on it.
    FieldType {
        String => "string",
        Number => "number",
        Boolean => "boolean",
        Date => "date",
        DateTime => "datetime",
        Enum => "enum",
    }
);

#[derive(Debug, Clone, PartialEq)]
pub struct FieldDefinition {
    pub key: Key,
    pub label: String,
    pub field_type: FieldType,
    /// Allowed values of an `enum` field, in display order; empty for other types.
    pub enum_values: Vec<String>,
    pub required: bool,
    /// Personal data is encrypted at rest and included in GDPR exports.
    pub personal: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    String(String),
    Number(f64),
    Boolean(bool),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Enum(String),
}

pub const MAX_STRING_VALUE_CHARS: usize = 4_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldValueError {
    #[error("expected a string")]
    NotAString,
    #[error("expected a finite number")]
    NotANumber,
    #[error("expected true or false")]
    NotABoolean,
    #[error("expected a date as YYYY-MM-DD")]
    NotADate,
    #[error("expected an RFC 3339 date-time such as 2026-11-25T08:00:00Z")]
    NotADateTime,
    #[error("expected one of: {}", allowed.join(", "))]
    NotAnAllowedValue { allowed: Vec<String> },
    #[error("is required")]
    Required,
    #[error("string {0}")]
    Text(#[from] TextError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldDefinitionError {
    #[error("an enum field needs at least one value")]
    EnumWithoutValues,
    #[error("only enum fields have values")]
    ValuesOnNonEnum,
    #[error("enum value {0:?} is listed twice")]
    DuplicateEnumValue(String),
    #[error("enum value {0}")]
    EnumValue(TextError),
}

impl FieldDefinition {
    /// Checks the enum values a definition would have; used when defining and altering fields.
    pub fn check_enum_values(field_type: FieldType, values: &[String]) -> Result<Vec<String>, FieldDefinitionError> {
        match field_type {
            FieldType::Enum if values.is_empty() => Err(FieldDefinitionError::EnumWithoutValues),
            FieldType::Enum => {
                let mut cleaned: Vec<String> = Vec::with_capacity(values.len());
                for raw in values {
                    let value = clean_text(raw, 200).map_err(FieldDefinitionError::EnumValue)?;
                    if cleaned.contains(&value) {
                        return Err(FieldDefinitionError::DuplicateEnumValue(value));
                    }
                    cleaned.push(value);
                }
                Ok(cleaned)
            }
            _ if values.is_empty() => Ok(Vec::new()),
            _ => Err(FieldDefinitionError::ValuesOnNonEnum),
        }
    }

    /// Parses a submitted JSON value into a value of this field. JSON `null` is not a value:
    /// callers treat it as "clear the field" before asking.
    pub fn parse_value(&self, raw: &Value) -> Result<FieldValue, FieldValueError> {
        match self.field_type {
            FieldType::String => {
                let text = raw.as_str().ok_or(FieldValueError::NotAString)?;
                Ok(FieldValue::String(clean_text(text, MAX_STRING_VALUE_CHARS)?))
            }
            FieldType::Number => {
                raw.as_f64().filter(|n| n.is_finite()).map(FieldValue::Number).ok_or(FieldValueError::NotANumber)
            }
            FieldType::Boolean => raw.as_bool().map(FieldValue::Boolean).ok_or(FieldValueError::NotABoolean),
            FieldType::Date => raw
                .as_str()
                .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
                .map(FieldValue::Date)
                .ok_or(FieldValueError::NotADate),
            FieldType::DateTime => raw
                .as_str()
                .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                .map(|at| FieldValue::DateTime(at.with_timezone(&Utc)))
                .ok_or(FieldValueError::NotADateTime),
            FieldType::Enum => match raw.as_str() {
                Some(text) if self.enum_values.iter().any(|allowed| allowed == text) => {
                    Ok(FieldValue::Enum(text.to_owned()))
                }
                _ => Err(FieldValueError::NotAnAllowedValue { allowed: self.enum_values.clone() }),
            },
        }
    }
}

impl FieldValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::String(_) => FieldType::String,
            FieldValue::Number(_) => FieldType::Number,
            FieldValue::Boolean(_) => FieldType::Boolean,
            FieldValue::Date(_) => FieldType::Date,
            FieldValue::DateTime(_) => FieldType::DateTime,
            FieldValue::Enum(_) => FieldType::Enum,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::String(text) | FieldValue::Enum(text) => Value::String(text.clone()),
            FieldValue::Number(number) => serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number),
            FieldValue::Boolean(flag) => Value::Bool(*flag),
            FieldValue::Date(date) => Value::String(date.format("%Y-%m-%d").to_string()),
            FieldValue::DateTime(at) => Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(field_type: FieldType, enum_values: &[&str]) -> FieldDefinition {
        FieldDefinition {
            key: Key::parse("f").unwrap(),
            label: "F".into(),
            field_type,
            enum_values: enum_values.iter().map(|v| v.to_string()).collect(),
            required: false,
            personal: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn values_of_the_declared_type_are_accepted() {
        assert_eq!(field(FieldType::Number, &[]).parse_value(&json!(4.5)), Ok(FieldValue::Number(4.5)));
        assert_eq!(field(FieldType::Boolean, &[]).parse_value(&json!(true)), Ok(FieldValue::Boolean(true)));
        assert_eq!(
            field(FieldType::Date, &[]).parse_value(&json!("1990-02-28")),
            Ok(FieldValue::Date(NaiveDate::from_ymd_opt(1990, 2, 28).unwrap()))
        );
        let at = field(FieldType::DateTime, &[]).parse_value(&json!("2026-11-25T09:00:00+01:00")).unwrap();
        assert_eq!(at.to_json(), json!("2026-11-25T08:00:00Z"));
        assert_eq!(field(FieldType::Enum, &["gold"]).parse_value(&json!("gold")), Ok(FieldValue::Enum("gold".into())));
    }

    #[test]
    fn values_of_another_type_are_rejected() {
        assert_eq!(field(FieldType::Number, &[]).parse_value(&json!("4")), Err(FieldValueError::NotANumber));
        assert_eq!(field(FieldType::String, &[]).parse_value(&json!(4)), Err(FieldValueError::NotAString));
        assert_eq!(field(FieldType::Boolean, &[]).parse_value(&json!("yes")), Err(FieldValueError::NotABoolean));
        assert_eq!(field(FieldType::Date, &[]).parse_value(&json!("1990-02-30")), Err(FieldValueError::NotADate));
        assert_eq!(field(FieldType::DateTime, &[]).parse_value(&json!("tomorrow")), Err(FieldValueError::NotADateTime));
        assert!(matches!(
            field(FieldType::Enum, &["gold"]).parse_value(&json!("platinum")),
            Err(FieldValueError::NotAnAllowedValue { .. })
        ));
    }

    #[test]
    fn enum_values_must_be_present_and_distinct() {
        assert_eq!(
            FieldDefinition::check_enum_values(FieldType::Enum, &[]),
            Err(FieldDefinitionError::EnumWithoutValues)
        );
        assert_eq!(
            FieldDefinition::check_enum_values(FieldType::Enum, &["a".into(), " a ".into()]),
            Err(FieldDefinitionError::DuplicateEnumValue("a".into()))
        );
        assert_eq!(
            FieldDefinition::check_enum_values(FieldType::Number, &["a".into()]),
            Err(FieldDefinitionError::ValuesOnNonEnum)
        );
    }
}
