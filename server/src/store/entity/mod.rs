//! sea-orm entities: the shape of the tables, private to the store.

pub mod admin_user;
pub mod api_key;
pub mod audit_entry;
pub mod audit_head;
pub mod blind_index_key;
pub mod consent;
pub mod consent_change;
pub mod consent_purpose;
pub mod contact;
pub mod contact_attribute;
pub mod contact_key;
pub mod email;
pub mod email_version;
pub mod erased_address;
pub mod event;
pub mod field_definition;
pub mod login_throttle;
pub mod opt_in_request;
pub mod outbox;
pub mod preference_center;
pub mod signup_form;
pub mod suppression;
pub mod topic;
pub mod topic_subscription;
pub mod used_refresh_token;
pub mod user_session;
