//! The tamper-evident audit log: every change appends one entry inside the writer's own
//! transaction, so an entry exists exactly when its change was committed. Entries form a
//! SHA-256 hash chain over a fixed, length-prefixed serialisation; `verify` walks it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    domain::{
        audit::AuditEntry,
        request::{Actor, RequestContext},
        webhook::WebhookEventType,
    },
    store::{StoreResult, audit as repository},
};

/// What personal values become in `changes`: the fact of a change stays visible, its content not.
pub const REDACTED: &str = "[redacted]";

/// The hash the first entry links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Bumped if the serialisation below ever changes, so that old and new entries cannot collide.
const FORMAT_TAG: &[u8] = b"rapport-audit-v1";

/// How many entries `verify` holds in memory at once.
const VERIFY_BATCH: u64 = 1_000;

/// A change to record, as the service describes it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: &'static str,
    pub target_kind: &'static str,
    pub target_id: String,
    pub changes: Changes,
}

impl Entry {
    pub fn new(
        action: &'static str,
        target_kind: &'static str,
        target_id: impl Into<String>,
        changes: Changes,
    ) -> Self {
        Self { action, target_kind, target_id: target_id.into(), changes }
    }
}

/// Changed fields with their values before and after; `None` is "absent" (JSON null).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes(BTreeMap<String, (Value, Value)>);

impl Changes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `field` if its value changed.
    pub fn field(&mut self, field: impl Into<String>, before: Option<Value>, after: Option<Value>) -> &mut Self {
        if before != after {
            self.0.insert(field.into(), (before.unwrap_or(Value::Null), after.unwrap_or(Value::Null)));
        }
        self
    }

    /// Records that a personal `field` changed, without its values: a set value shows as
    /// [`REDACTED`], an absent one as null, so setting, changing and clearing stay told apart.
    pub fn personal(&mut self, field: impl Into<String>, before: Option<Value>, after: Option<Value>) -> &mut Self {
        if before != after {
            let redact = |value: Option<Value>| value.map_or(Value::Null, |_| Value::from(REDACTED));
            self.0.insert(field.into(), (redact(before), redact(after)));
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `{field: {before, after}}`, fields in name order.
    pub fn to_json(&self) -> Value {
        let object: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(field, (before, after))| (field.clone(), json!({ "before": before, "after": after })))
            .collect();
        Value::Object(object)
    }

    pub fn to_json_text(&self) -> String {
        self.to_json().to_string()
    }
}

/// The actor's kind and id as recorded.
pub fn actor_parts(actor: &Actor) -> (&'static str, Option<String>) {
    match actor {
        Actor::Bootstrap => ("bootstrap", None),
        Actor::User { id, .. } => ("user", Some(id.to_string())),
        Actor::ApiKey { id, .. } => ("api_key", Some(id.to_string())),
        Actor::Contact { contact_id, .. } => ("contact_token", Some(contact_id.to_string())),
        Actor::Cli => ("system", Some("cli".to_owned())),
        Actor::WebhookSource { key, .. } => ("webhook_source", Some(key.clone())),
        Actor::Stream { name } => ("stream", Some(name.clone())),
        Actor::Anonymous => ("anonymous", None),
    }
}

/// Appends `entry` to the chain. Call it inside the write transaction of the change it records,
/// before committing: the head row's lock then orders concurrent writers, also across
/// processes, and a rolled-back change leaves no entry.
pub async fn append(
    conn: &impl ConnectionTrait,
    ctx: &RequestContext,
    at: DateTime<Utc>,
    entry: Entry,
) -> StoreResult<AuditEntry> {
    let (last_seq, last_hash) = repository::lock_head(conn).await?;
    let (actor_kind, actor_id) = actor_parts(&ctx.actor);
    let mut stored = AuditEntry {
        seq: last_seq + 1,
        id: Uuid::now_v7(),
        // The databases keep microseconds; the hash must cover what is read back.
        occurred_at: crate::domain::at_storage_precision(at),
        actor_kind: actor_kind.to_owned(),
        actor_id,
        action: entry.action.to_owned(),
        target_kind: entry.target_kind.to_owned(),
        target_id: entry.target_id,
        changes: entry.changes.to_json_text(),
        request_id: ctx.request_id.clone(),
        ip: ctx.ip.map(|ip| ip.to_string()),
        prev_hash: last_hash,
        hash: String::new(),
    };
    stored.hash = entry_hash(&stored);
    repository::append(conn, &stored).await?;
    // A change that subscribers hear about is announced in the same transaction, with the same
    // (redacted) description: receivers read personal values through the API.
    if let Some(event_type) = WebhookEventType::for_audit_action(&stored.action) {
        let changes: Value = serde_json::from_str(&stored.changes).unwrap_or(Value::Null);
        let data = json!({ "contactId": stored.target_id, "changes": changes });
        crate::store::webhooks::record(conn, event_type, &stored.target_id, data, stored.occurred_at).await?;
    }
    Ok(stored)
}

/// Hex SHA-256 over the entry's fields (its `hash` excepted) in a fixed order, each
/// length-prefixed so that no two different entries serialise alike, `prev_hash` included.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT_TAG);
    let mut put = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    let optional = |value: &Option<String>| match value {
        None => vec![0u8],
        Some(text) => [&[1u8][..], text.as_bytes()].concat(),
    };
    put(entry.prev_hash.as_bytes());
    put(&entry.seq.to_be_bytes());
    put(entry.id.as_bytes());
    put(entry.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true).as_bytes());
    put(entry.actor_kind.as_bytes());
    put(&optional(&entry.actor_id));
    put(entry.action.as_bytes());
    put(entry.target_kind.as_bytes());
    put(entry.target_id.as_bytes());
    put(entry.changes.as_bytes());
    put(entry.request_id.as_bytes());
    put(&optional(&entry.ip));
    hex::encode(hasher.finalize())
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        entries: u64,
    },
    /// The first entry (by seq) at which the chain fails, and why.
    Broken {
        seq: i64,
        reason: String,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Intact { entries } => write!(f, "audit chain intact: {entries} entries"),
            Verdict::Broken { seq, reason } => write!(f, "audit chain broken at seq {seq}: {reason}"),
        }
    }
}

/// Checks the chain up to the head as it is when verification starts, in seq order and in
/// batches, so memory stays flat however long the log. `progress(checked, total)` is called
/// after every batch.
pub async fn verify(conn: &impl ConnectionTrait, mut progress: impl FnMut(u64, u64)) -> StoreResult<Verdict> {
    let (head_seq, head_hash) = repository::head(conn).await?;
    let total = u64::try_from(head_seq).unwrap_or(0);
    let mut checker = ChainChecker::new();
    loop {
        let batch = repository::batch(conn, checker.last_seq, VERIFY_BATCH).await?;
        let Some(last) = batch.last().map(|entry| entry.seq) else { break };
        for entry in batch.iter().filter(|entry| entry.seq <= head_seq) {
            if let Err((seq, reason)) = checker.check(entry) {
                return Ok(Verdict::Broken { seq, reason });
            }
        }
        progress(u64::try_from(checker.last_seq).unwrap_or(0), total);
        if last >= head_seq {
            break;
        }
    }
    Ok(checker.finish(head_seq, &head_hash))
}

/// The state of a walk along the chain: the last entry accepted.
struct ChainChecker {
    last_seq: i64,
    last_hash: String,
}

impl ChainChecker {
    fn new() -> Self {
        Self { last_seq: 0, last_hash: GENESIS_HASH.to_owned() }
    }

    fn check(&mut self, entry: &AuditEntry) -> Result<(), (i64, String)> {
        let expected = self.last_seq + 1;
        if entry.seq != expected {
            return Err((expected, format!("entry is missing (the next stored entry is seq {})", entry.seq)));
        }
        if entry.prev_hash != self.last_hash {
            return Err((entry.seq, format!("does not link to entry {}: its prev_hash differs", self.last_seq)));
        }
        if entry_hash(entry) != entry.hash {
            return Err((entry.seq, "its contents do not match its hash: the entry was altered".to_owned()));
        }
        self.last_seq = entry.seq;
        self.last_hash.clone_from(&entry.hash);
        Ok(())
    }

    fn finish(self, head_seq: i64, head_hash: &str) -> Verdict {
        if self.last_seq < head_seq {
            return Verdict::Broken {
                seq: self.last_seq + 1,
                reason: format!("entry is missing (the chain's head is at seq {head_seq})"),
            };
        }
        if self.last_hash != head_hash {
            return Verdict::Broken {
                seq: self.last_seq,
                reason: "the chain's head records another hash for the last entry".to_owned(),
            };
        }
        Verdict::Intact { entries: u64::try_from(self.last_seq).unwrap_or(0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(length: i64) -> Vec<AuditEntry> {
        let mut prev_hash = GENESIS_HASH.to_owned();
        (1..=length)
            .map(|seq| {
                let mut changes = Changes::new();
                changes.field("label", Some(json!("Old")), Some(json!(format!("New {seq}"))));
                let mut entry = AuditEntry {
                    seq,
                    id: Uuid::now_v7(),
                    occurred_at: Utc::now(),
                    actor_kind: "bootstrap".to_owned(),
                    actor_id: None,
                    action: "field.altered".to_owned(),
                    target_kind: "field".to_owned(),
                    target_id: "plan".to_owned(),
                    changes: changes.to_json_text(),
                    request_id: format!("request-{seq}"),
                    ip: Some("127.0.0.1".to_owned()),
                    prev_hash: prev_hash.clone(),
                    hash: String::new(),
                };
                entry.hash = entry_hash(&entry);
                prev_hash.clone_from(&entry.hash);
                entry
            })
            .collect()
    }

    fn walk(entries: &[AuditEntry]) -> Verdict {
        let mut checker = ChainChecker::new();
        for entry in entries {
            if let Err((seq, reason)) = checker.check(entry) {
                return Verdict::Broken { seq, reason };
            }
        }
        let (head_seq, head_hash) = entries.last().map_or((0, GENESIS_HASH.to_owned()), |e| (e.seq, e.hash.clone()));
        checker.finish(head_seq, &head_hash)
    }

    #[test]
    fn the_hash_is_hex_sha256_and_the_same_for_the_same_entry() {
        let entry = &chain(1)[0];
        assert_eq!(entry.hash.len(), 64);
        assert!(entry.hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(entry_hash(entry), entry.hash);
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let entry = chain(1).remove(0);
        let altered: Vec<AuditEntry> = vec![
            AuditEntry { seq: 2, ..entry.clone() },
            AuditEntry { id: Uuid::now_v7(), ..entry.clone() },
            AuditEntry { occurred_at: entry.occurred_at + chrono::Duration::microseconds(1), ..entry.clone() },
            AuditEntry { actor_kind: "user".to_owned(), ..entry.clone() },
            AuditEntry { actor_id: Some(String::new()), ..entry.clone() },
            AuditEntry { action: "field.deleted".to_owned(), ..entry.clone() },
            AuditEntry { target_kind: "topic".to_owned(), ..entry.clone() },
            AuditEntry { target_id: "plan2".to_owned(), ..entry.clone() },
            AuditEntry { changes: entry.changes.replace("New", "Nex"), ..entry.clone() },
            AuditEntry { request_id: "other".to_owned(), ..entry.clone() },
            AuditEntry { ip: None, ..entry.clone() },
            AuditEntry { prev_hash: "1".repeat(64), ..entry.clone() },
        ];
        for other in altered {
            assert_ne!(entry_hash(&other), entry.hash, "{other:?}");
        }
    }

    #[test]
    fn moving_bytes_between_adjacent_fields_changes_the_hash() {
        let entry = chain(1).remove(0);
        let shifted = AuditEntry { target_kind: "fiel".to_owned(), target_id: "dplan".to_owned(), ..entry.clone() };
        assert_ne!(entry_hash(&shifted), entry.hash);
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        assert_eq!(walk(&chain(5)), Verdict::Intact { entries: 5 });
        assert_eq!(walk(&[]), Verdict::Intact { entries: 0 });
    }

    #[test]
    fn an_altered_entry_is_named_by_its_seq() {
        let mut entries = chain(5);
        entries[2].changes = entries[2].changes.replace("New", "Nev");
        assert!(matches!(walk(&entries), Verdict::Broken { seq: 3, .. }));
    }

    #[test]
    fn a_rehashed_entry_breaks_the_link_of_the_next() {
        let mut entries = chain(5);
        entries[2].action = "field.deleted".to_owned();
        entries[2].hash = entry_hash(&entries[2]);
        assert!(matches!(walk(&entries), Verdict::Broken { seq: 4, .. }));
    }

    #[test]
    fn a_deleted_entry_is_named_by_its_seq() {
        let mut entries = chain(5);
        entries.remove(1);
        assert!(matches!(walk(&entries), Verdict::Broken { seq: 2, .. }));
    }

    #[test]
    fn a_deleted_last_entry_is_found_through_the_head() {
        let entries = chain(5);
        let mut checker = ChainChecker::new();
        for entry in &entries[..4] {
            assert!(checker.check(entry).is_ok());
        }
        assert!(matches!(checker.finish(5, &entries[4].hash), Verdict::Broken { seq: 5, .. }));
    }

    #[test]
    fn personal_changes_show_that_a_value_changed_but_not_the_value() {
        let mut changes = Changes::new();
        changes
            .personal("email", None, Some(json!("ada@example.com")))
            .personal("phone", Some(json!("+44 1")), Some(json!("+44 2")))
            .personal("lastName", Some(json!("Byron")), None)
            .personal("firstName", Some(json!("Ada")), Some(json!("Ada")))
            .field("locale", Some(json!("en")), Some(json!("fr")));
        let text = changes.to_json_text();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({
                "email": { "before": null, "after": REDACTED },
                "lastName": { "before": REDACTED, "after": null },
                "locale": { "before": "en", "after": "fr" },
                "phone": { "before": REDACTED, "after": REDACTED },
            })
        );
        assert!(!text.contains("ada@") && !text.contains("Byron") && !text.contains("+44"));
    }
}
