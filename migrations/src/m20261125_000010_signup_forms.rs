//! Signup forms and double opt-in. A form names the topics it subscribes to and the consent
//! wording it shows; a submission to a form that needs confirmation leaves an opt-in request
//! (with the proof of the submission) until the person follows the link in the confirmation
//! email, or the request expires.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000010_signup_forms"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SignupForm::Table)
                    .col(uuid(SignupForm::Id).primary_key())
                    .col(string_len(SignupForm::Key, 64))
                    .col(string_len(SignupForm::Name, 200))
                    .col(json(SignupForm::Topics))
                    .col(text(SignupForm::Wording))
                    .col(boolean(SignupForm::DoubleOptIn))
                    .col(timestamp_with_time_zone(SignupForm::CreatedAt))
                    .col(timestamp_with_time_zone(SignupForm::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("signup_form_key_key")
                    .table(SignupForm::Table)
                    .col(SignupForm::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OptInRequest::Table)
                    .col(uuid(OptInRequest::Id).primary_key())
                    .col(uuid(OptInRequest::ContactId))
                    .col(uuid(OptInRequest::FormId))
                    .col(json(OptInRequest::Topics))
                    .col(string_len(OptInRequest::Status, 16))
                    .col(string_len_null(OptInRequest::SubmittedIp, 45))
                    .col(string_len_null(OptInRequest::SubmittedUserAgent, 512))
                    .col(timestamp_with_time_zone(OptInRequest::SubmittedAt))
                    .col(timestamp_with_time_zone(OptInRequest::ExpiresAt))
                    .col(timestamp_with_time_zone_null(OptInRequest::ConfirmedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OptInRequest::Table, OptInRequest::ContactId)
                            .to(Contact::Table, Contact::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(OptInRequest::Table, OptInRequest::FormId)
                            .to(SignupForm::Table, SignupForm::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("opt_in_request_contact_idx")
                    .table(OptInRequest::Table)
                    .col(OptInRequest::ContactId)
                    .col(OptInRequest::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(OptInRequest::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SignupForm::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum SignupForm {
    Table,
    Id,
    Key,
    Name,
    Topics,
    Wording,
    DoubleOptIn,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OptInRequest {
    Table,
    Id,
    ContactId,
    FormId,
    Topics,
    Status,
    SubmittedIp,
    SubmittedUserAgent,
    SubmittedAt,
    ExpiresAt,
    ConfirmedAt,
}

#[derive(DeriveIden)]
enum Contact {
    Table,
    Id,
}
