//! Mail: rendering email versions for one contact (`render`), and (in `delivery`) turning
//! outbox rows into SMTP transactions.

pub mod render;
