//! Mail: rendering email versions for one contact (`render`), open and click tracking of the
//! rendered HTML (`tracking`), and (in `delivery`) turning outbox rows into SMTP transactions.

pub mod render;
pub mod tracking;
