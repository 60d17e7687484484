//! Encryption at rest: wrapped per-contact data keys in a table of their own (operators back it
//! up apart from the data), the wrapped blind index key, blind index columns for email and phone
//! (email uniqueness moves there), and a marker for custom field values that are sealed.
//!
//! Nothing has been deployed yet, so this migration changes the personal columns in place and
//! converts no data: a database with plaintext contacts in it would not be readable afterwards.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000003_encryption"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ContactKey::Table)
                    .col(uuid(ContactKey::ContactId).primary_key())
                    .col(string_len(ContactKey::MasterKeyId, 32))
                    .col(text(ContactKey::WrappedKey))
                    .col(timestamp_with_time_zone(ContactKey::CreatedAt))
                    // Deleting a contact destroys its key: copies of its ciphertext elsewhere
                    // become unreadable (crypto-shredding).
                    .foreign_key(
                        ForeignKey::create()
                            .name("contact_key_contact_fkey")
                            .from(ContactKey::Table, ContactKey::ContactId)
                            .to(Contact::Table, Contact::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Rotation looks for keys still wrapped by another master key.
        manager
            .create_index(
                Index::create()
                    .name("contact_key_master_key_idx")
                    .table(ContactKey::Table)
                    .col(ContactKey::MasterKeyId)
                    .col(ContactKey::ContactId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BlindIndexKey::Table)
                    .col(string_len(BlindIndexKey::Name, 32).primary_key())
                    .col(string_len(BlindIndexKey::MasterKeyId, 32))
                    .col(text(BlindIndexKey::WrappedKey))
                    .col(timestamp_with_time_zone(BlindIndexKey::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager.drop_index(Index::drop().name("contact_email_key").table(Contact::Table).to_owned()).await?;
        // SQLite takes one column per ALTER TABLE.
        for column in [Contact::EmailIndex, Contact::PhoneIndex] {
            manager
                .alter_table(Table::alter().table(Contact::Table).add_column(string_len_null(column, 64)).to_owned())
                .await?;
        }
        // Ciphertexts are longer than the plaintext limits. SQLite does not enforce declared
        // lengths (and cannot alter a column's type), so only PostgreSQL needs the change.
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
            for column in [Contact::Email, Contact::Phone, Contact::FirstName, Contact::LastName] {
                manager
                    .alter_table(Table::alter().table(Contact::Table).modify_column(text_null(column)).to_owned())
                    .await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name("contact_email_index_key")
                    .table(Contact::Table)
                    .col(Contact::EmailIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("contact_phone_index_idx")
                    .table(Contact::Table)
                    .col(Contact::PhoneIndex)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ContactAttribute::Table)
                    .add_column(boolean(ContactAttribute::Sealed).default(false))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(ContactAttribute::Table).drop_column(ContactAttribute::Sealed).to_owned())
            .await?;
        manager.drop_index(Index::drop().name("contact_phone_index_idx").table(Contact::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("contact_email_index_key").table(Contact::Table).to_owned()).await?;
        for column in [Contact::EmailIndex, Contact::PhoneIndex] {
            manager.alter_table(Table::alter().table(Contact::Table).drop_column(column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create().name("contact_email_key").table(Contact::Table).col(Contact::Email).unique().to_owned(),
            )
            .await?;
        manager.drop_table(Table::drop().table(BlindIndexKey::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ContactKey::Table).to_owned()).await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Contact {
    Table,
    Id,
    Email,
    Phone,
    FirstName,
    LastName,
    EmailIndex,
    PhoneIndex,
}

#[derive(DeriveIden)]
enum ContactAttribute {
    Table,
    Sealed,
}

#[derive(DeriveIden)]
enum ContactKey {
    Table,
    ContactId,
    MasterKeyId,
    WrappedKey,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BlindIndexKey {
    Table,
    Name,
    MasterKeyId,
    WrappedKey,
    CreatedAt,
}
