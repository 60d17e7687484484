//! Mail: the template language of emails (`template`), rendering email versions for one contact
//! and checking them when they are saved (`render`), open and click tracking of the rendered
//! HTML (`tracking`) and its text part (`text`), both over the tokens of `html`, the bytes of a
//! message (`message`, its parts encoded by `body`), the SMTP connections that carry them
//! (`smtp`) and the sending rate limits (`rate`). The outbox and its worker are in
//! `service::delivery`.

pub mod body;
pub mod html;
pub mod message;
pub mod rate;
pub mod render;
pub mod smtp;
pub mod template;
pub mod text;
pub mod tracking;
