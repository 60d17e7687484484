//! Mail: the template language of emails (`template`), rendering email versions for one contact
//! and checking them when they are saved (`render`), open and click tracking of the rendered
//! HTML (`tracking`), and (in `delivery`) turning outbox rows into SMTP transactions.

pub mod render;
pub mod template;
pub mod tracking;
