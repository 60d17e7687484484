//! Who may sign in and call: admin users with their sessions, and API keys. Secrets are never
//! stored: passwords as argon2id hashes (PHC strings that record their own parameters), refresh
//! tokens and API keys as SHA-256 digests, which suffice for random 256-bit secrets.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000004_access"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AdminUser::Table)
                    .col(uuid(AdminUser::Id).primary_key())
                    .col(string_len_uniq(AdminUser::Email, 320))
                    .col(text(AdminUser::PasswordHash))
                    .col(string_len(AdminUser::Role, 16))
                    .col(timestamp_with_time_zone(AdminUser::CreatedAt))
                    .col(timestamp_with_time_zone_null(AdminUser::DisabledAt))
                    .col(integer(AdminUser::FailedLogins).default(0))
                    .col(timestamp_with_time_zone_null(AdminUser::LockedUntil))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserSession::Table)
                    .col(uuid(UserSession::Id).primary_key())
                    .col(uuid(UserSession::UserId))
                    .col(string_len(UserSession::RefreshHash, 64))
                    .col(string_len_null(UserSession::PreviousRefreshHash, 64))
                    .col(timestamp_with_time_zone(UserSession::CreatedAt))
                    .col(timestamp_with_time_zone(UserSession::RefreshedAt))
                    .col(timestamp_with_time_zone(UserSession::ExpiresAt))
                    .col(timestamp_with_time_zone_null(UserSession::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserSession::Table, UserSession::UserId)
                            .to(AdminUser::Table, AdminUser::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("user_session_user_idx")
                    .table(UserSession::Table)
                    .col(UserSession::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKey::Table)
                    .col(uuid(ApiKey::Id).primary_key())
                    .col(string_len(ApiKey::Name, 200))
                    .col(string_len(ApiKey::Prefix, 16))
                    .col(string_len_uniq(ApiKey::SecretHash, 64))
                    .col(text(ApiKey::Scopes))
                    .col(timestamp_with_time_zone(ApiKey::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKey::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKey::LastUsedAt))
                    .col(timestamp_with_time_zone_null(ApiKey::RevokedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ApiKey::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(UserSession::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AdminUser::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum AdminUser {
    Table,
    Id,
    Email,
    PasswordHash,
    Role,
    CreatedAt,
    DisabledAt,
    FailedLogins,
    LockedUntil,
}

#[derive(DeriveIden)]
enum UserSession {
    Table,
    Id,
    UserId,
    RefreshHash,
    PreviousRefreshHash,
    CreatedAt,
    RefreshedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum ApiKey {
    Table,
    Id,
    Name,
    Prefix,
    SecretHash,
    Scopes,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
}
