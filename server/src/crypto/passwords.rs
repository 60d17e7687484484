//! Password hashing with argon2id. The PHC string stores algorithm, version, parameters and salt
//! beside the hash, so raising the parameters later only needs a rehash at the next sign-in.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version, password_hash::SaltString,
};

use crate::domain::access::Password;

/// OWASP's first recommended argon2id setting: 19 MiB, two passes, one lane.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

pub fn hash(password: &Password) -> String {
    let salt = SaltString::encode_b64(&super::random::<16>())
        .unwrap_or_else(|_| unreachable!("16 bytes are a valid salt length"));
    hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .unwrap_or_else(|_| unreachable!("argon2 hashes any password within the domain's length bounds"))
        .to_string()
}

/// Whether `password` matches `stored`, with the parameters recorded in `stored`.
pub fn verify(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Spends the time of one verification, so that an unknown account answers as slowly as a known
/// one and sign-in cannot be used to learn which addresses have accounts.
pub fn verify_against_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        hash(&Password::parse("rapport placeholder password").unwrap_or_else(|_| unreachable!("long enough")))
    });
    verify(dummy, password);
}

/// Whether `stored` was made with weaker settings than today's and should be replaced.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return true };
    let current = Params::default();
    let Ok(params) = Params::try_from(&parsed) else { return true };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13.into())
        || params.m_cost() < current.m_cost()
        || params.t_cost() < current.t_cost()
        || params.p_cost() < current.p_cost()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_records_its_parameters() {
        let password = Password::parse("correct horse battery").unwrap();
        let stored = hash(&password);
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(verify(&stored, "correct horse battery"));
        assert!(!verify(&stored, "correct horse batterY"));
        assert!(!verify("not a hash", "correct horse battery"));
        assert!(!needs_rehash(&stored));
    }

    #[test]
    fn weaker_hashes_are_flagged_for_rehash() {
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8, 1, 1, None).unwrap())
            .hash_password(b"correct horse battery", &SaltString::encode_b64(&[7; 16]).unwrap())
            .unwrap()
            .to_string();
        assert!(verify(&weak, "correct horse battery"));
        assert!(needs_rehash(&weak));
    }
}
