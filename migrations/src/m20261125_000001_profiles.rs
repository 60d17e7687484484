//! Profiles: contacts, custom fields and their values, consents with their history, topics and
//! behavioural events. Custom field values live in typed columns of one table (not a JSON blob)
//! so that segment queries can index and compare them the same way on SQLite and PostgreSQL;
//! each value records its type (a field's type never changes), so reading needs no definitions.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_profiles"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Contact::Table)
                    .col(uuid(Contact::Id).primary_key())
                    .col(string_len_null(Contact::ExternalId, 255))
                    .col(string_len_null(Contact::Email, 320))
                    .col(string_len_null(Contact::Phone, 32))
                    .col(string_len_null(Contact::FirstName, 200))
                    .col(string_len_null(Contact::LastName, 200))
                    .col(string_len_null(Contact::Locale, 64))
                    .col(string_len_null(Contact::TimeZone, 64))
                    .col(string_len_null(Contact::Country, 2))
                    .col(big_integer(Contact::Version))
                    .col(timestamp_with_time_zone(Contact::CreatedAt))
                    .col(timestamp_with_time_zone(Contact::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        unique_index(manager, "contact_external_id_key", Contact::Table, &[Contact::ExternalId]).await?;
        unique_index(manager, "contact_email_key", Contact::Table, &[Contact::Email]).await?;

        manager
            .create_table(
                Table::create()
                    .table(FieldDefinition::Table)
                    .col(string_len(FieldDefinition::Key, 64).primary_key())
                    .col(string_len(FieldDefinition::Label, 200))
                    .col(string_len(FieldDefinition::FieldType, 16))
                    .col(json(FieldDefinition::EnumValues))
                    .col(boolean(FieldDefinition::Required))
                    .col(boolean(FieldDefinition::Personal))
                    .col(timestamp_with_time_zone(FieldDefinition::CreatedAt))
                    .col(timestamp_with_time_zone(FieldDefinition::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ContactAttribute::Table)
                    .col(uuid(ContactAttribute::ContactId))
                    .col(string_len(ContactAttribute::FieldKey, 64))
                    .col(string_len(ContactAttribute::ValueType, 16))
                    .col(text_null(ContactAttribute::ValueText))
                    .col(double_null(ContactAttribute::ValueNumber))
                    .col(boolean_null(ContactAttribute::ValueBool))
                    .col(timestamp_with_time_zone_null(ContactAttribute::ValueTime))
                    .primary_key(Index::create().col(ContactAttribute::ContactId).col(ContactAttribute::FieldKey))
                    .foreign_key(&mut cascade(
                        "contact_attribute_contact_fkey",
                        ContactAttribute::Table,
                        ContactAttribute::ContactId,
                        Contact::Table,
                        Contact::Id,
                    ))
                    .foreign_key(&mut cascade(
                        "contact_attribute_field_fkey",
                        ContactAttribute::Table,
                        ContactAttribute::FieldKey,
                        FieldDefinition::Table,
                        FieldDefinition::Key,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("contact_attribute_text_idx", ContactAttribute::ValueText),
            ("contact_attribute_number_idx", ContactAttribute::ValueNumber),
            ("contact_attribute_time_idx", ContactAttribute::ValueTime),
        ] {
            plain_index(manager, name, ContactAttribute::Table, &[ContactAttribute::FieldKey, column]).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(ConsentPurpose::Table)
                    .col(string_len(ConsentPurpose::Key, 64).primary_key())
                    .col(string_len(ConsentPurpose::Label, 200))
                    .col(text_null(ConsentPurpose::Description))
                    .col(boolean(ConsentPurpose::BuiltIn))
                    .col(timestamp_with_time_zone(ConsentPurpose::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let mut built_in = Query::insert();
        built_in.into_table(ConsentPurpose::Table).columns([
            ConsentPurpose::Key,
            ConsentPurpose::Label,
            ConsentPurpose::Description,
            ConsentPurpose::BuiltIn,
            ConsentPurpose::CreatedAt,
        ]);
        for (key, label, description) in [
            ("marketing", "Marketing", "Newsletters, offers and other promotional messages."),
            ("analytics", "Analytics", "Measuring how messages and pages are used."),
            ("profiling", "Profiling", "Personalising content from behaviour and preferences."),
        ] {
            built_in.values_panic([
                key.into(),
                label.into(),
                description.into(),
                true.into(),
                Expr::current_timestamp(),
            ]);
        }
        manager.exec_stmt(built_in).await?;

        manager
            .create_table(
                Table::create()
                    .table(ConsentChange::Table)
                    .col(uuid(ConsentChange::Id).primary_key())
                    .col(uuid(ConsentChange::ContactId))
                    .col(string_len(ConsentChange::Purpose, 64))
                    .col(string_len(ConsentChange::Channel, 16))
                    .col(string_len(ConsentChange::Status, 16))
                    .col(string_len(ConsentChange::LegalBasis, 32))
                    .col(string_len(ConsentChange::Source, 32))
                    .col(timestamp_with_time_zone(ConsentChange::CapturedAt))
                    .col(timestamp_with_time_zone(ConsentChange::RecordedAt))
                    .col(string_len_null(ConsentChange::ProofIp, 45))
                    .col(text_null(ConsentChange::ProofUserAgent))
                    .col(string_len_null(ConsentChange::WordingId, 200))
                    .col(integer_null(ConsentChange::WordingVersion))
                    .foreign_key(&mut cascade(
                        "consent_change_contact_fkey",
                        ConsentChange::Table,
                        ConsentChange::ContactId,
                        Contact::Table,
                        Contact::Id,
                    ))
                    .foreign_key(&mut restrict(
                        "consent_change_purpose_fkey",
                        ConsentChange::Table,
                        ConsentChange::Purpose,
                        ConsentPurpose::Table,
                        ConsentPurpose::Key,
                    ))
                    .to_owned(),
            )
            .await?;
        plain_index(
            manager,
            "consent_change_history_idx",
            ConsentChange::Table,
            &[ConsentChange::ContactId, ConsentChange::Purpose, ConsentChange::Channel, ConsentChange::Id],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Consent::Table)
                    .col(uuid(Consent::ContactId))
                    .col(string_len(Consent::Purpose, 64))
                    .col(string_len(Consent::Channel, 16))
                    .col(uuid(Consent::ChangeId))
                    .col(string_len(Consent::Status, 16))
                    .col(timestamp_with_time_zone(Consent::CapturedAt))
                    .primary_key(Index::create().col(Consent::ContactId).col(Consent::Purpose).col(Consent::Channel))
                    .foreign_key(&mut cascade(
                        "consent_contact_fkey",
                        Consent::Table,
                        Consent::ContactId,
                        Contact::Table,
                        Contact::Id,
                    ))
                    .foreign_key(&mut cascade(
                        "consent_change_fkey",
                        Consent::Table,
                        Consent::ChangeId,
                        ConsentChange::Table,
                        ConsentChange::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        plain_index(
            manager,
            "consent_status_idx",
            Consent::Table,
            &[Consent::Purpose, Consent::Channel, Consent::Status],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Topic::Table)
                    .col(uuid(Topic::Id).primary_key())
                    .col(string_len(Topic::Key, 64))
                    .col(string_len(Topic::Name, 200))
                    .col(text_null(Topic::Description))
                    .col(string_len(Topic::DefaultFrequency, 16))
                    .col(timestamp_with_time_zone(Topic::CreatedAt))
                    .col(timestamp_with_time_zone(Topic::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        unique_index(manager, "topic_key_key", Topic::Table, &[Topic::Key]).await?;

        manager
            .create_table(
                Table::create()
                    .table(TopicSubscription::Table)
                    .col(uuid(TopicSubscription::ContactId))
                    .col(uuid(TopicSubscription::TopicId))
                    .col(string_len(TopicSubscription::Status, 16))
                    .col(string_len(TopicSubscription::Frequency, 16))
                    .col(timestamp_with_time_zone(TopicSubscription::UpdatedAt))
                    .primary_key(Index::create().col(TopicSubscription::ContactId).col(TopicSubscription::TopicId))
                    .foreign_key(&mut cascade(
                        "topic_subscription_contact_fkey",
                        TopicSubscription::Table,
                        TopicSubscription::ContactId,
                        Contact::Table,
                        Contact::Id,
                    ))
                    .foreign_key(&mut cascade(
                        "topic_subscription_topic_fkey",
                        TopicSubscription::Table,
                        TopicSubscription::TopicId,
                        Topic::Table,
                        Topic::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        plain_index(
            manager,
            "topic_subscription_status_idx",
            TopicSubscription::Table,
            &[TopicSubscription::TopicId, TopicSubscription::Status],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Event::Table)
                    .col(uuid(Event::Id).primary_key())
                    .col(uuid(Event::ContactId))
                    .col(string_len(Event::EventType, 100))
                    .col(json_binary(Event::Properties))
                    .col(timestamp_with_time_zone(Event::OccurredAt))
                    .col(timestamp_with_time_zone(Event::ReceivedAt))
                    .col(string_len(Event::Source, 64))
                    .col(string_len_null(Event::IdempotencyKey, 255))
                    .foreign_key(&mut cascade(
                        "event_contact_fkey",
                        Event::Table,
                        Event::ContactId,
                        Contact::Table,
                        Contact::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        unique_index(manager, "event_idempotency_key", Event::Table, &[Event::Source, Event::IdempotencyKey]).await?;
        plain_index(manager, "event_timeline_idx", Event::Table, &[Event::ContactId, Event::OccurredAt, Event::Id])
            .await?;
        plain_index(manager, "event_type_idx", Event::Table, &[Event::EventType, Event::OccurredAt]).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Event::Table.into_iden(),
            TopicSubscription::Table.into_iden(),
            Topic::Table.into_iden(),
            Consent::Table.into_iden(),
            ConsentChange::Table.into_iden(),
            ConsentPurpose::Table.into_iden(),
            ContactAttribute::Table.into_iden(),
            FieldDefinition::Table.into_iden(),
            Contact::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

async fn unique_index<T: Iden + Clone + 'static, C: Iden + Clone + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: &[C],
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table).unique();
    for column in columns {
        index.col(column.clone());
    }
    manager.create_index(index.to_owned()).await
}

async fn plain_index<T: Iden + Clone + 'static, C: Iden + Clone + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: &[C],
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for column in columns {
        index.col(column.clone());
    }
    manager.create_index(index.to_owned()).await
}

fn cascade<T: Iden + 'static, C: Iden + 'static, U: Iden + 'static, D: Iden + 'static>(
    name: &str,
    from_table: T,
    from_column: C,
    to_table: U,
    to_column: D,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from_table, from_column)
        .to(to_table, to_column)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// Consent purposes that a history refers to cannot be deleted: the proof must stay readable.
fn restrict<T: Iden + 'static, C: Iden + 'static, U: Iden + 'static, D: Iden + 'static>(
    name: &str,
    from_table: T,
    from_column: C,
    to_table: U,
    to_column: D,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from_table, from_column)
        .to(to_table, to_column)
        .on_delete(ForeignKeyAction::Restrict)
        .to_owned()
}

#[derive(DeriveIden, Clone)]
enum Contact {
    Table,
    Id,
    ExternalId,
    Email,
    Phone,
    FirstName,
    LastName,
    Locale,
    TimeZone,
    Country,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
enum FieldDefinition {
    Table,
    Key,
    Label,
    FieldType,
    EnumValues,
    Required,
    Personal,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
enum ContactAttribute {
    Table,
    ContactId,
    FieldKey,
    ValueType,
    ValueText,
    ValueNumber,
    ValueBool,
    ValueTime,
}

#[derive(DeriveIden, Clone)]
enum ConsentPurpose {
    Table,
    Key,
    Label,
    Description,
    BuiltIn,
    CreatedAt,
}

#[derive(DeriveIden, Clone)]
enum ConsentChange {
    Table,
    Id,
    ContactId,
    Purpose,
    Channel,
    Status,
    LegalBasis,
    Source,
    CapturedAt,
    RecordedAt,
    ProofIp,
    ProofUserAgent,
    WordingId,
    WordingVersion,
}

#[derive(DeriveIden, Clone)]
enum Consent {
    Table,
    ContactId,
    Purpose,
    Channel,
    ChangeId,
    Status,
    CapturedAt,
}

#[derive(DeriveIden, Clone)]
enum Topic {
    Table,
    Id,
    Key,
    Name,
    Description,
    DefaultFrequency,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
enum TopicSubscription {
    Table,
    ContactId,
    TopicId,
    Status,
    Frequency,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
#[allow(clippy::enum_variant_names)]
enum Event {
    Table,
    Id,
    ContactId,
    EventType,
    Properties,
    OccurredAt,
    ReceivedAt,
    Source,
    IdempotencyKey,
}
