//! Rapport's database schema, one migration per change, applied by `rapport migrate` and on
//! `rapport serve`. A migration that has landed on main is never edited: add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_profiles;
mod m20261125_000002_audit;
mod m20261125_000003_encryption;
mod m20261125_000004_access;
mod m20261125_000005_privacy;
mod m20261125_000006_emails;
mod m20261125_000007_outbox;
mod m20261125_000008_sign_in_hardening;
mod m20261125_000009_preference_center;
mod m20261125_000010_signup_forms;
mod m20261125_000011_contact_token_revocation;
mod m20261125_000012_signup_form_fields;
mod m20261125_000013_contact_activity;
mod m20261125_000014_webhooks;
mod m20261125_000015_webhook_sources;
mod m20261125_000016_wording_version_text;
mod m20261203_000001_imports;
mod m20261203_000002_event_text_collation;
mod m20261203_000003_partial_attribute_indexes;
mod m20261204_000001_outbox_waiting_index;
mod m20261206_000001_event_timeline;
mod m20261206_000002_clustered_contact_tables;
mod m20261206_000003_attributes_in_contact_row;
mod m20261206_000004_contact_import;
mod m20261207_000001_lean_contact_indexes;
mod m20261207_000002_data_key_deletion_trigger;
mod m20261207_000003_webhook_lease_holder;
mod m20261207_000004_inbound_webhook_completion;
mod m20261207_000005_import_progress;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_profiles::Migration),
            Box::new(m20261125_000002_audit::Migration),
            Box::new(m20261125_000003_encryption::Migration),
            Box::new(m20261125_000004_access::Migration),
            Box::new(m20261125_000005_privacy::Migration),
            Box::new(m20261125_000006_emails::Migration),
            Box::new(m20261125_000007_outbox::Migration),
            Box::new(m20261125_000008_sign_in_hardening::Migration),
            Box::new(m20261125_000009_preference_center::Migration),
            Box::new(m20261125_000010_signup_forms::Migration),
            Box::new(m20261125_000011_contact_token_revocation::Migration),
            Box::new(m20261125_000012_signup_form_fields::Migration),
            Box::new(m20261125_000013_contact_activity::Migration),
            Box::new(m20261125_000014_webhooks::Migration),
            Box::new(m20261125_000015_webhook_sources::Migration),
            Box::new(m20261125_000016_wording_version_text::Migration),
            Box::new(m20261203_000001_imports::Migration),
            Box::new(m20261203_000002_event_text_collation::Migration),
            Box::new(m20261203_000003_partial_attribute_indexes::Migration),
            Box::new(m20261204_000001_outbox_waiting_index::Migration),
            Box::new(m20261206_000001_event_timeline::Migration),
            Box::new(m20261206_000002_clustered_contact_tables::Migration),
            Box::new(m20261206_000003_attributes_in_contact_row::Migration),
            Box::new(m20261206_000004_contact_import::Migration),
            Box::new(m20261207_000001_lean_contact_indexes::Migration),
            Box::new(m20261207_000002_data_key_deletion_trigger::Migration),
            Box::new(m20261207_000003_webhook_lease_holder::Migration),
            Box::new(m20261207_000004_inbound_webhook_completion::Migration),
            Box::new(m20261207_000005_import_progress::Migration),
        ]
    }
}

/// Runs the script written for the connection's backend: `sqlite`, or `postgres` for the rest.
async fn run_script(manager: &SchemaManager<'_>, sqlite: &str, postgres: &str) -> Result<(), DbErr> {
    let script = match manager.get_database_backend() {
        sea_orm_migration::sea_orm::DbBackend::Sqlite => sqlite,
        _ => postgres,
    };
    manager.get_connection().execute_unprepared(script).await?;
    Ok(())
}
