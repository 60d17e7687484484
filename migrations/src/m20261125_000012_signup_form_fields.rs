//! Signup forms choose which profile fields they ask for (first name, country, a custom field…),
//! beyond the email address every form asks. Forms made before keep asking for the first name,
//! as they did.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000012_signup_form_fields"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SignupForm::Table)
                    .add_column(ColumnDef::new(SignupForm::Fields).json().not_null().default(r#"["first_name"]"#))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(SignupForm::Table).drop_column(SignupForm::Fields).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum SignupForm {
    Table,
    Fields,
}
