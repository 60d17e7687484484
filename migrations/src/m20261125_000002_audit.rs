//! The audit log: an append-only, hash-chained list of every change. Writers assign `seq`
//! themselves (no auto-increment) while holding the one-row `audit_head` lock, so that several
//! processes on one database still append one gap-free chain in commit order.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000002_audit"
    }
}

/// The hash the first entry links to: nothing came before it.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEntry::Table)
                    .col(big_integer(AuditEntry::Seq).primary_key())
                    .col(uuid(AuditEntry::Id))
                    .col(timestamp_with_time_zone(AuditEntry::OccurredAt))
                    .col(string_len(AuditEntry::ActorKind, 32))
                    .col(string_len_null(AuditEntry::ActorId, 255))
                    .col(string_len(AuditEntry::Action, 64))
                    .col(string_len(AuditEntry::TargetKind, 32))
                    .col(string_len(AuditEntry::TargetId, 255))
                    .col(text(AuditEntry::Changes))
                    .col(string_len(AuditEntry::RequestId, 255))
                    .col(string_len_null(AuditEntry::Ip, 64))
                    .col(string_len(AuditEntry::PrevHash, 64))
                    .col(string_len(AuditEntry::Hash, 64))
                    .to_owned(),
            )
            .await?;
        // Each filter of the audit log reads newest first, so every index ends in seq.
        let indexes: [(&str, Vec<AuditEntry>); 4] = [
            ("audit_entry_target_idx", vec![AuditEntry::TargetKind, AuditEntry::TargetId, AuditEntry::Seq]),
            ("audit_entry_actor_idx", vec![AuditEntry::ActorKind, AuditEntry::ActorId, AuditEntry::Seq]),
            ("audit_entry_action_idx", vec![AuditEntry::Action, AuditEntry::Seq]),
            ("audit_entry_occurred_idx", vec![AuditEntry::OccurredAt, AuditEntry::Seq]),
        ];
        for (name, columns) in indexes {
            let mut index = Index::create();
            index.name(name).table(AuditEntry::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(AuditHead::Table)
                    .col(integer(AuditHead::Id).primary_key())
                    .col(big_integer(AuditHead::Seq))
                    .col(string_len(AuditHead::Hash, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(AuditHead::Table)
                    .columns([AuditHead::Id, AuditHead::Seq, AuditHead::Hash])
                    .values_panic([1.into(), 0i64.into(), GENESIS_HASH.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AuditHead::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AuditEntry::Table).to_owned()).await
    }
}

#[derive(DeriveIden, Clone)]
enum AuditEntry {
    Table,
    Seq,
    Id,
    OccurredAt,
    ActorKind,
    ActorId,
    Action,
    TargetKind,
    TargetId,
    Changes,
    RequestId,
    Ip,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditHead {
    Table,
    Id,
    Seq,
    Hash,
}
