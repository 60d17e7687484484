//! Who may do what: admin roles, the permissions they and API keys carry, and the purposes a
//! contact token can be issued for.

use std::{collections::BTreeSet, fmt};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{contact::EmailAddress, string_enum};

string_enum! {
    /// An admin user's role. Each role can do everything the next one can, and more.
    Role {
        Owner => "owner",
        Admin => "admin",
        Marketer => "marketer",
        Analyst => "analyst",
    }
}

string_enum! {
    /// One thing a caller may do. API key scopes are spelled the same way.
    Permission {
        ProfilesRead => "profiles:read",
        ProfilesWrite => "profiles:write",
        EventsWrite => "events:write",
        SchemaManage => "schema:manage",
        ProgramsManage => "programs:manage",
        MailSend => "mail:send",
        AuditRead => "audit:read",
        PrivacyManage => "privacy:manage",
        UsersManage => "users:manage",
        KeysManage => "keys:manage",
        WebhooksManage => "webhooks:manage",
    }
}

string_enum! {
    /// What a contact token was issued for; each opens only its own door.
    ContactTokenPurpose {
        Preferences => "preferences",
        Unsubscribe => "unsubscribe",
        ConfirmOptIn => "confirm_opt_in",
    }
}

impl Role {
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Owner | Role::Admin => Permission::ALL,
            Role::Marketer => &[ProfilesRead, ProfilesWrite, EventsWrite, ProgramsManage, MailSend],
            Role::Analyst => &[ProfilesRead],
        }
    }

    pub fn may(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    /// Only owners make or unmake owners; admins manage everyone else.
    pub fn may_manage(self, other: Role) -> bool {
        match self {
            Role::Owner => true,
            Role::Admin => other != Role::Owner,
            Role::Marketer | Role::Analyst => false,
        }
    }
}

impl Permission {
    /// Managing people and keys stays with people: a leaked key must not mint more keys.
    pub fn grantable_to_api_keys(self) -> bool {
        !matches!(self, Permission::UsersManage | Permission::KeysManage)
    }
}

impl ContactTokenPurpose {
    /// How long a link in an email stays usable. Unsubscribe links outlive the others because
    /// people act on old mail, and mailbox providers expect them to keep working.
    pub fn lifetime(self) -> chrono::Duration {
        match self {
            ContactTokenPurpose::Preferences => chrono::Duration::days(30),
            ContactTokenPurpose::Unsubscribe => chrono::Duration::days(90),
            ContactTokenPurpose::ConfirmOptIn => chrono::Duration::days(7),
        }
    }
}

/// The scopes of an API key: a non-empty set of permissions that keys may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Permission>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("an API key needs at least one scope")]
    Empty,
    #[error("unknown scope {0:?}; scopes are: {list}", list = grantable_list())]
    Unknown(String),
    #[error("{0} cannot be granted to an API key")]
    NotGrantable(Permission),
}

fn grantable_list() -> String {
    Permission::ALL.iter().filter(|p| p.grantable_to_api_keys()).map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
}

impl Scopes {
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, ScopeError> {
        let mut scopes = BTreeSet::new();
        for scope in raw {
            let scope = scope.as_ref();
            let permission: Permission = scope.parse().map_err(|_| ScopeError::Unknown(scope.to_owned()))?;
            if !permission.grantable_to_api_keys() {
                return Err(ScopeError::NotGrantable(permission));
            }
            scopes.insert(permission);
        }
        if scopes.is_empty() { Err(ScopeError::Empty) } else { Ok(Self(scopes)) }
    }

    pub fn contains(&self, permission: Permission) -> bool {
        self.0.contains(&permission)
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    /// Stored as one space-separated string, as OAuth writes scopes.
    pub fn to_stored(&self) -> String {
        self.iter().map(Permission::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn from_stored(stored: &str) -> Result<Self, ScopeError> {
        Self::parse(&stored.split_whitespace().collect::<Vec<_>>())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stored())
    }
}

/// A person who signs in to administer Rapport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub id: Uuid,
    pub email: EmailAddress,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// A disabled user cannot sign in, and their sessions stop working at once.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// An API key as listed: everything but its secret, which only its creator ever saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, so people can tell their keys apart.
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires_at| expires_at > now)
    }
}

/// A password as typed: long enough to resist guessing, short enough to hash cheaply.
#[derive(Clone)]
pub struct Password(secrecy::SecretString);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("must be at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
}

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 1024;

impl Password {
    pub fn parse(raw: &str) -> Result<Self, PasswordError> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            Err(PasswordError::TooShort)
        } else if chars > MAX_PASSWORD_CHARS {
            Err(PasswordError::TooLong)
        } else {
            Ok(Self(raw.to_owned().into()))
        }
    }

    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_permissions_of_the_roles_below_it() {
        let roles = [Role::Owner, Role::Admin, Role::Marketer, Role::Analyst];
        for pair in roles.windows(2) {
            for permission in pair[1].permissions() {
                assert!(pair[0].may(*permission), "{} lacks {permission} that {} has", pair[0], pair[1]);
            }
        }
        assert!(!Role::Analyst.may(Permission::ProfilesWrite));
        assert!(!Role::Marketer.may(Permission::UsersManage));
    }

    #[test]
    fn only_owners_manage_owners() {
        assert!(Role::Owner.may_manage(Role::Owner));
        assert!(!Role::Admin.may_manage(Role::Owner));
        assert!(Role::Admin.may_manage(Role::Admin));
        assert!(!Role::Marketer.may_manage(Role::Analyst));
    }

    #[test]
    fn scopes_parse_round_trip_and_refuse_what_keys_may_not_hold() {
        let scopes = Scopes::parse(&["profiles:write", "profiles:read", "profiles:read"]).unwrap();
        assert_eq!(scopes.to_stored(), "profiles:read profiles:write");
        assert_eq!(Scopes::from_stored(&scopes.to_stored()).unwrap(), scopes);
        assert_eq!(Scopes::parse::<&str>(&[]).unwrap_err(), ScopeError::Empty);
        assert_eq!(Scopes::parse(&["root"]).unwrap_err(), ScopeError::Unknown("root".into()));
        assert_eq!(Scopes::parse(&["keys:manage"]).unwrap_err(), ScopeError::NotGrantable(Permission::KeysManage));
    }

    #[test]
    fn passwords_have_bounds_and_never_print() {
        assert_eq!(Password::parse("short").unwrap_err(), PasswordError::TooShort);
        assert_eq!(Password::parse(&"x".repeat(MAX_PASSWORD_CHARS + 1)).unwrap_err(), PasswordError::TooLong);
        let password = Password::parse("correct horse battery").unwrap();
        assert_eq!(password.expose(), "correct horse battery");
        assert!(!format!("{password:?}").contains("horse"));
    }
}
