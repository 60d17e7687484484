//! Sign-in hardening. Failed attempts are counted per address typed (a keyed hash of it), known
//! account or not, so that a lock cannot tell anyone which addresses have accounts; the counter
//! moves off `admin_user`. Every refresh token a session has used is remembered, so that
//! presenting any of them again, however many refreshes later, reveals the copy.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000008_sign_in_hardening"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginThrottle::Table)
                    .col(string_len(LoginThrottle::AddressHash, 64).primary_key())
                    .col(integer(LoginThrottle::Failures))
                    .col(timestamp_with_time_zone_null(LoginThrottle::LockedUntil))
                    .col(timestamp_with_time_zone(LoginThrottle::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsedRefreshToken::Table)
                    .col(string_len(UsedRefreshToken::Hash, 64).primary_key())
                    .col(uuid(UsedRefreshToken::SessionId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UsedRefreshToken::Table, UsedRefreshToken::SessionId)
                            .to(UserSession::Table, UserSession::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        for column in [AdminUser::FailedLogins, AdminUser::LockedUntil] {
            manager.alter_table(Table::alter().table(AdminUser::Table).drop_column(column).to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter().table(UserSession::Table).drop_column(UserSession::PreviousRefreshHash).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UserSession::Table)
                    .add_column(string_len_null(UserSession::PreviousRefreshHash, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AdminUser::Table)
                    .add_column(integer(AdminUser::FailedLogins).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AdminUser::Table)
                    .add_column(timestamp_with_time_zone_null(AdminUser::LockedUntil))
                    .to_owned(),
            )
            .await?;
        manager.drop_table(Table::drop().table(UsedRefreshToken::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(LoginThrottle::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    AddressHash,
    Failures,
    LockedUntil,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum UsedRefreshToken {
    Table,
    Hash,
    SessionId,
}

#[derive(DeriveIden)]
enum UserSession {
    Table,
    Id,
    PreviousRefreshHash,
}

#[derive(DeriveIden)]
enum AdminUser {
    Table,
    FailedLogins,
    LockedUntil,
}
