//! Contact imports: how the columns of a file map to contact fields, how one row becomes the
//! changes to one contact, and what a run of an import records. Pure, so that the parser can run
//! on its own thread ahead of the database writes, and so that a rejected row is described by
//! its line, column and reason without ever repeating the (personal) value.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    at_storage_precision,
    contact::{Contact, CountryCode, EmailAddress, ExternalId, Locale, PersonName, PhoneNumber, Profile, TimeZone},
    field::{FieldDefinition, FieldType, FieldValue, FieldValueError},
    key::Key,
    string_enum,
};

string_enum!(
    /// Which identifier finds the contact a row updates; a row without it is rejected.
    ImportKey {
        Email => "email",
        ExternalId => "external_id",
    }
);

string_enum!(
    /// Where a run of an import stands. A failed run keeps the batches it committed.
    ImportStatus {
        Running => "running",
        Completed => "completed",
        Failed => "failed",
    }
);

/// A run of an import, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub id: Uuid,
    pub file_name: String,
    pub key: ImportKey,
    /// Who ran it, as the audit log names actors (`user`, `api_key`, `system` …).
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub request_id: String,
    pub status: ImportStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: ImportCounts,
    /// Why a failed run stopped, without personal data.
    pub failure: Option<String>,
}

/// What became of the rows read so far. Every data row counts once in `rows` and once in
/// exactly one of the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    /// Rows that found their contact already as they describe it.
    pub unchanged: u64,
    pub rejected: u64,
}

impl ImportCounts {
    pub fn add(&mut self, other: &ImportCounts) {
        self.rows += other.rows;
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.rejected += other.rejected;
    }
}

/// Why one row was not imported. `line` is where the row starts in the file (the header is
/// line 1), so that a person can find it; the reason never contains the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    /// The column as the file's header names it; none when the row as a whole is at fault.
    pub column: Option<String>,
    pub reason: String,
}

/// A contact field a column can fill.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    ExternalId,
    Email,
    Phone,
    FirstName,
    LastName,
    Locale,
    TimeZone,
    Country,
    Attribute(FieldDefinition),
    /// Read and dropped (`--map column=-`, or an unknown column with `--ignore-unknown`).
    Ignored,
}

/// The built-in fields by the names a header or a mapping may use, compared after `normalise`.
const BUILT_IN: [(&str, Target); 12] = [
    ("externalid", Target::ExternalId),
    ("id", Target::ExternalId),
    ("email", Target::Email),
    ("emailaddress", Target::Email),
    ("phone", Target::Phone),
    ("firstname", Target::FirstName),
    ("lastname", Target::LastName),
    ("locale", Target::Locale),
    ("language", Target::Locale),
    ("timezone", Target::TimeZone),
    ("country", Target::Country),
    ("countrycode", Target::Country),
];

/// Lower case without separators, so that `First Name`, `first_name` and `firstName` all match.
fn normalise(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

impl Target {
    /// The field a header or a mapping names: a built-in field, a custom field by key (or as
    /// `attributes.key`), or `-` to ignore the column.
    fn named(name: &str, definitions: &HashMap<Key, FieldDefinition>) -> Option<Target> {
        let name = name.trim();
        if name == "-" {
            return Some(Target::Ignored);
        }
        if let Some(key) = name.strip_prefix("attributes.") {
            return Key::parse(key).ok().and_then(|key| definitions.get(&key)).cloned().map(Target::Attribute);
        }
        let wanted = normalise(name);
        if let Some((_, target)) = BUILT_IN.iter().find(|(built_in, _)| *built_in == wanted) {
            return Some(target.clone());
        }
        definitions
            .values()
            .find(|definition| normalise(definition.key.as_str()) == wanted)
            .cloned()
            .map(Target::Attribute)
    }

    /// The field's name as the API spells it, for messages and the report.
    pub fn name(&self) -> String {
        match self {
            Target::ExternalId => "externalId".to_owned(),
            Target::Email => "email".to_owned(),
            Target::Phone => "phone".to_owned(),
            Target::FirstName => "firstName".to_owned(),
            Target::LastName => "lastName".to_owned(),
            Target::Locale => "locale".to_owned(),
            Target::TimeZone => "timeZone".to_owned(),
            Target::Country => "country".to_owned(),
            Target::Attribute(definition) => format!("attributes.{}", definition.key),
            Target::Ignored => "-".to_owned(),
        }
    }
}

/// Why a file's columns cannot be mapped; the import does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the file has no header row")]
    NoHeader,
    #[error("column {0} has an empty name")]
    EmptyColumnName(usize),
    #[error("column {0:?} appears twice in the header")]
    DuplicateColumn(String),
    #[error(
        "column {0:?} matches no contact field or custom field; map it (column=field), or ignore it (column=-, or ignore unknown columns)"
    )]
    UnknownColumn(String),
    #[error("the mapping names column {0:?}, which the file does not have")]
    MappedColumnMissing(String),
    #[error("the mapping of column {column:?} names {target:?}, which is no contact field or custom field")]
    UnknownTarget { column: String, target: String },
    #[error("columns {first:?} and {second:?} both fill {target}")]
    TargetTwice { target: String, first: String, second: String },
    #[error("no column fills {0}, the field that finds the contact to update")]
    NoKeyColumn(String),
}

/// Which field each column of a file fills, decided once from the header.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    columns: Vec<(String, Target)>,
    key: ImportKey,
}

impl ColumnMap {
    /// Maps `header` by its names, with `overrides` (`column`, `field`) taking precedence.
    /// Unknown columns are an error unless `ignore_unknown`, so that a misspelt header never
    /// silently drops a column of data.
    pub fn resolve(
        header: &[&str],
        overrides: &[(String, String)],
        definitions: &HashMap<Key, FieldDefinition>,
        ignore_unknown: bool,
        key: ImportKey,
    ) -> Result<Self, MappingError> {
        if header.is_empty() || header.iter().all(|name| name.trim().is_empty()) {
            return Err(MappingError::NoHeader);
        }
        for (column, _) in overrides {
            if !header.iter().any(|name| name.trim() == column.trim()) {
                return Err(MappingError::MappedColumnMissing(column.clone()));
            }
        }
        let mut columns: Vec<(String, Target)> = Vec::with_capacity(header.len());
        for (index, raw) in header.iter().enumerate() {
            let name = raw.trim();
            if name.is_empty() {
                return Err(MappingError::EmptyColumnName(index + 1));
            }
            if columns.iter().any(|(seen, _)| seen == name) {
                return Err(MappingError::DuplicateColumn(name.to_owned()));
            }
            let target = match overrides.iter().rev().find(|(column, _)| column.trim() == name) {
                Some((_, field)) => Target::named(field, definitions)
                    .ok_or_else(|| MappingError::UnknownTarget { column: name.to_owned(), target: field.clone() })?,
                None => match Target::named(name, definitions) {
                    Some(target) => target,
                    None if ignore_unknown => Target::Ignored,
                    None => return Err(MappingError::UnknownColumn(name.to_owned())),
                },
            };
            if target != Target::Ignored
                && let Some((first, _)) = columns.iter().find(|(_, seen)| *seen == target)
            {
                return Err(MappingError::TargetTwice {
                    target: target.name(),
                    first: first.clone(),
                    second: name.to_owned(),
                });
            }
            columns.push((name.to_owned(), target));
        }
        let key_target = match key {
            ImportKey::Email => Target::Email,
            ImportKey::ExternalId => Target::ExternalId,
        };
        if !columns.iter().any(|(_, target)| *target == key_target) {
            return Err(MappingError::NoKeyColumn(key_target.name()));
        }
        Ok(Self { columns, key })
    }

    pub fn key(&self) -> ImportKey {
        self.key
    }

    /// The column that fills `target`, as the header names it.
    pub fn column_of(&self, target: &Target) -> Option<&str> {
        self.columns.iter().find(|(_, filled)| filled == target).map(|(name, _)| name.as_str())
    }

    /// Each column with the field it fills, in file order.
    pub fn columns(&self) -> &[(String, Target)] {
        &self.columns
    }

    /// Parses one data row. An empty cell leaves its field as it is (an import never clears a
    /// field); the first bad cell rejects the whole row, so that no contact is half imported.
    pub fn parse_row<'a>(
        &self,
        line: u64,
        cells: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<ImportRow, RowError> {
        if cells.len() != self.columns.len() {
            return Err(RowError {
                line,
                column: None,
                reason: format!("has {} cells where the header has {} columns", cells.len(), self.columns.len()),
            });
        }
        let mut row = ImportRow { line, ..ImportRow::default() };
        for ((column, target), cell) in self.columns.iter().zip(cells) {
            let cell = cell.trim();
            if cell.is_empty() || *target == Target::Ignored {
                continue;
            }
            let reject = |reason: String| RowError { line, column: Some(column.clone()), reason };
            let reason = |error: &dyn std::fmt::Display| reject(error.to_string());
            match target {
                Target::ExternalId => row.external_id = Some(ExternalId::parse(cell).map_err(|e| reason(&e))?),
                Target::Email => row.email = Some(EmailAddress::parse(cell).map_err(|e| reason(&e))?),
                Target::Phone => row.profile.phone = Some(PhoneNumber::parse(cell).map_err(|e| reason(&e))?),
                Target::FirstName => row.profile.first_name = Some(PersonName::parse(cell).map_err(|e| reason(&e))?),
                Target::LastName => row.profile.last_name = Some(PersonName::parse(cell).map_err(|e| reason(&e))?),
                Target::Locale => row.profile.locale = Some(Locale::parse(cell).map_err(|e| reason(&e))?),
                Target::TimeZone => row.profile.time_zone = Some(TimeZone::parse(cell).map_err(|e| reason(&e))?),
                Target::Country => row.profile.country = Some(CountryCode::parse(cell).map_err(|e| reason(&e))?),
                Target::Attribute(definition) => {
                    let value = cell_value(definition, cell).map_err(|e| reason(&e))?;
                    row.attributes.push((definition.key.clone(), value));
                }
                Target::Ignored => {}
            }
        }
        let (has_key, key_name) = match self.key {
            ImportKey::Email => (row.email.is_some(), Target::Email),
            ImportKey::ExternalId => (row.external_id.is_some(), Target::ExternalId),
        };
        if !has_key {
            let column = self.columns.iter().find(|(_, target)| *target == key_name).map(|(name, _)| name.clone());
            return Err(RowError {
                line,
                column,
                reason: format!("is empty, but {} finds the contact to update", key_name.name()),
            });
        }
        Ok(row)
    }
}

/// A CSV cell as a value of its custom field. Cells are text, so numbers and booleans are read
/// from their usual spellings before the field's own rules apply.
fn cell_value(definition: &FieldDefinition, cell: &str) -> Result<FieldValue, FieldValueError> {
    let raw = match definition.field_type {
        FieldType::Number => {
            let number = cell.parse::<f64>().map_err(|_| FieldValueError::NotANumber)?;
            serde_json::Number::from_f64(number).map(Value::Number).ok_or(FieldValueError::NotANumber)?
        }
        FieldType::Boolean => match cell.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Value::Bool(true),
            "false" | "no" | "0" => Value::Bool(false),
            _ => return Err(FieldValueError::NotABoolean),
        },
        FieldType::String | FieldType::Enum | FieldType::Date | FieldType::DateTime => Value::String(cell.to_owned()),
    };
    Ok(match definition.parse_value(&raw)? {
        FieldValue::DateTime(at) => FieldValue::DateTime(at_storage_precision(at)),
        other => other,
    })
}

/// One valid row: the values its non-empty cells set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportRow {
    pub line: u64,
    pub external_id: Option<ExternalId>,
    pub email: Option<EmailAddress>,
    pub profile: Profile,
    pub attributes: Vec<(Key, FieldValue)>,
}

impl ImportRow {
    /// The contact after this row: the values it sets replace the current ones, and the version
    /// moves on only if something changed.
    pub fn apply(&self, current: &Contact, now: DateTime<Utc>) -> Contact {
        fn set<T: Clone>(value: &Option<T>, slot: &mut Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        let mut next = current.clone();
        set(&self.external_id, &mut next.external_id);
        set(&self.email, &mut next.email);
        let (profile, next_profile) = (&self.profile, &mut next.profile);
        set(&profile.phone, &mut next_profile.phone);
        set(&profile.first_name, &mut next_profile.first_name);
        set(&profile.last_name, &mut next_profile.last_name);
        set(&profile.locale, &mut next_profile.locale);
        set(&profile.time_zone, &mut next_profile.time_zone);
        set(&profile.country, &mut next_profile.country);
        for (key, value) in &self.attributes {
            next.attributes.insert(key.clone(), value.clone());
        }
        if next == *current {
            return next;
        }
        Contact { version: current.version + 1, updated_at: now, ..next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions() -> HashMap<Key, FieldDefinition> {
        let field = |key: &str, field_type, values: &[&str]| FieldDefinition {
            key: Key::parse(key).unwrap(),
            label: key.to_owned(),
            field_type,
            enum_values: values.iter().map(|v| v.to_string()).collect(),
            required: false,
            personal: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        [
            field("loyalty_tier", FieldType::Enum, &["gold", "silver"]),
            field("lifetime_value", FieldType::Number, &[]),
            field("vip", FieldType::Boolean, &[]),
        ]
        .into_iter()
        .map(|definition| (definition.key.clone(), definition))
        .collect()
    }

    fn map(header: &[&str], overrides: &[(&str, &str)], ignore_unknown: bool) -> Result<ColumnMap, MappingError> {
        let overrides: Vec<(String, String)> =
            overrides.iter().map(|(column, field)| (column.to_string(), field.to_string())).collect();
        ColumnMap::resolve(header, &overrides, &definitions(), ignore_unknown, ImportKey::Email)
    }

    #[test]
    fn headers_match_fields_whatever_their_case_and_separators() {
        let columns = map(&["E-Mail", "First Name", "last_name", "Loyalty Tier", "lifetimeValue"], &[], false).unwrap();
        let names: Vec<String> = columns.columns().iter().map(|(_, target)| target.name()).collect();
        assert_eq!(names, ["email", "firstName", "lastName", "attributes.loyalty_tier", "attributes.lifetime_value"]);
    }

    #[test]
    fn unknown_columns_stop_the_import_unless_ignored_or_mapped() {
        assert_eq!(
            map(&["email", "shoe size"], &[], false).unwrap_err(),
            MappingError::UnknownColumn("shoe size".into())
        );
        assert_eq!(map(&["email", "shoe size"], &[], true).unwrap().columns()[1].1, Target::Ignored);
        let mapped = map(&["mail", "tier"], &[("mail", "email"), ("tier", "attributes.loyalty_tier")], false).unwrap();
        assert_eq!(mapped.columns()[1].1.name(), "attributes.loyalty_tier");
        assert!(matches!(map(&["email"], &[("nope", "email")], false), Err(MappingError::MappedColumnMissing(_))));
        assert!(matches!(map(&["email", "a"], &[("a", "shoe_size")], false), Err(MappingError::UnknownTarget { .. })));
    }

    #[test]
    fn a_file_without_the_key_column_or_with_a_field_twice_is_refused() {
        assert_eq!(map(&["first name"], &[], false).unwrap_err(), MappingError::NoKeyColumn("email".into()));
        assert!(matches!(map(&["email", "Email Address"], &[], false), Err(MappingError::TargetTwice { .. })));
    }

    #[test]
    fn a_bad_cell_rejects_its_row_naming_the_column_but_not_the_value() {
        let columns = map(&["email", "loyalty_tier", "vip", "lifetime_value"], &[], false).unwrap();
        let error = columns.parse_row(7, ["ada@example.com", "platinum", "yes", "3"].into_iter()).unwrap_err();
        assert_eq!(error.line, 7);
        assert_eq!(error.column.as_deref(), Some("loyalty_tier"));
        assert!(!error.reason.contains("platinum"), "{}", error.reason);
        let error = columns.parse_row(8, ["not-an-address", "", "", ""].into_iter()).unwrap_err();
        assert_eq!(error.column.as_deref(), Some("email"));
        assert!(!error.reason.contains("not-an-address"));
        let error = columns.parse_row(9, ["ada@example.com", "", "", "lots"].into_iter()).unwrap_err();
        assert_eq!(error.column.as_deref(), Some("lifetime_value"));
    }

    #[test]
    fn empty_cells_leave_fields_alone_and_typed_cells_are_read() {
        let columns = map(&["email", "loyalty_tier", "vip", "lifetime_value"], &[], false).unwrap();
        let row = columns.parse_row(2, [" Ada@Example.com ", "", "no", "12.5"].into_iter()).unwrap();
        assert_eq!(row.email.unwrap().as_str(), "Ada@example.com");
        assert_eq!(
            row.attributes,
            [
                (Key::parse("vip").unwrap(), FieldValue::Boolean(false)),
                (Key::parse("lifetime_value").unwrap(), FieldValue::Number(12.5)),
            ]
        );
        let error = columns.parse_row(3, ["", "gold", "", ""].into_iter()).unwrap_err();
        assert_eq!(error.column.as_deref(), Some("email"));
        let error = columns.parse_row(4, ["a@example.com"].into_iter()).unwrap_err();
        assert_eq!(error.column, None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn any_row_either_parses_or_is_rejected_without_its_values(
                cells in proptest::collection::vec("\\PC{0,12}", 4),
            ) {
                let columns = map(&["email", "loyalty_tier", "vip", "lifetime_value"], &[], false).unwrap();
                match columns.parse_row(2, cells.iter().map(String::as_str)) {
                    Ok(row) => prop_assert!(row.email.is_some()),
                    Err(error) => {
                        prop_assert_eq!(error.line, 2);
                        for cell in cells.iter().map(|cell| cell.trim()).filter(|cell| cell.chars().count() > 8) {
                            prop_assert!(!error.reason.contains(cell), "{} in {}", cell, error.reason);
                        }
                    }
                }
            }
        }
    }
}
