//! Field encryption at rest: master keys that wrap per-contact data keys, an AEAD envelope for
//! personal values, and a keyed blind index for lookups. Plain Rust with no database: the store
//! decides what to seal and where the wrapped keys live.
//!
//! Every envelope names the key that sealed it and is bound (as associated data) to the contact
//! and field it belongs to, so a ciphertext copied to another row or column fails to open.

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub mod passwords;
pub mod tokens;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// The envelope format; a new format gets a new prefix and both are read during a migration.
const ENVELOPE_VERSION: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is not base64")]
    NotBase64,
    #[error("decodes to {0} bytes; it must be 32")]
    WrongLength(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// No key the process holds has this id (a rotation is half done, or the wrong key is set).
    #[error("no key with id {0} is loaded")]
    UnknownKey(String),
    /// The ciphertext was altered, or belongs to another contact or field.
    #[error("ciphertext does not authenticate")]
    Forged,
    #[error("ciphertext is malformed")]
    Malformed,
}

/// A 256-bit key with a short public id: the first 8 bytes of a SHA-256 of the key, in hex. The
/// id names the key in stored rows without revealing anything usable about it.
#[derive(Clone)]
struct SecretKey {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl SecretKey {
    fn new(bytes: [u8; KEY_LEN]) -> Self {
        let digest = Sha256::new().chain_update(b"rapport key id\0").chain_update(bytes).finalize();
        let id = hex::encode(&digest[..8]);
        Self { bytes, id }
    }

    fn generate() -> Self {
        Self::new(random())
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        // A nonce needs to be unique, not to come from the kernel: a system call per sealed
        // value was a twentieth of an import's CPU. The thread's generator is a CSPRNG that
        // the operating system seeds and reseeds.
        let mut nonce_bytes = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce_bytes);
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(self.bytes));
        // Encryption of an in-memory buffer fails only on absurd lengths (> 256 GiB).
        #[allow(clippy::expect_used)]
        let sealed = cipher
            .encrypt(&XNonce::from(nonce_bytes), Payload { msg: plaintext, aad })
            .expect("XChaCha20-Poly1305 encrypts any buffer that fits in memory");
        [nonce_bytes.as_slice(), &sealed].concat()
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(self.bytes));
        cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad }).map_err(|_| CryptoError::Forged)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    // HMAC accepts keys of any length.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The operating system's generator failing is not something to carry on from.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// The master key an operator holds (`RAPPORT_MASTER_KEY`): it only wraps other keys.
#[derive(Clone, Debug)]
pub struct MasterKey(SecretKey);

impl MasterKey {
    pub fn parse(base64: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(base64.trim()).map_err(|_| KeyError::NotBase64)?;
        let bytes: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self(SecretKey::new(bytes)))
    }

    pub fn generate() -> Self {
        Self(SecretKey::generate())
    }

    /// The key as an operator writes it down: standard base64, as `parse` reads it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.bytes)
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }
}

/// A key wrapped by a master key, as the key tables store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub master_key_id: String,
    pub wrapped: String,
}

/// The master keys this process holds: the current one wraps, and during a rotation the
/// previous one still unwraps keys that have not been re-wrapped yet.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl MasterKeys {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        let previous = previous.filter(|previous| previous.id() != current.id());
        Self { current, previous }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// `purpose` names what the key is for (a contact, the blind index) and is bound to the
    /// wrapped bytes, so a wrapped key moved to another row does not unwrap.
    fn wrap(&self, key: &SecretKey, purpose: &str) -> WrappedKey {
        WrappedKey {
            master_key_id: self.current.id().to_owned(),
            wrapped: STANDARD.encode(self.current.0.seal(&key.bytes, purpose.as_bytes())),
        }
    }

    fn unwrap(&self, wrapped: &WrappedKey, purpose: &str) -> Result<SecretKey, CryptoError> {
        let master = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|master| master.id() == wrapped.master_key_id)
            .ok_or_else(|| CryptoError::UnknownKey(wrapped.master_key_id.clone()))?;
        let sealed = STANDARD.decode(&wrapped.wrapped).map_err(|_| CryptoError::Malformed)?;
        let bytes = master.0.open(&sealed, purpose.as_bytes())?;
        let bytes: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| CryptoError::Malformed)?;
        Ok(SecretKey::new(bytes))
    }

    /// A key for another purpose (signing tokens) derived from each master key held, current
    /// first. Deriving keeps operators to one secret, and rotating the master key rotates these.
    pub fn derive(&self, label: &str) -> Vec<DerivedKey> {
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .map(|master| {
                DerivedKey(SecretKey::new(hmac_sha256(&master.0.bytes, &[b"rapport derived key\0", label.as_bytes()])))
            })
            .collect()
    }

    /// Unwraps with whichever key wrapped it and wraps again with the current key.
    pub fn rewrap(&self, wrapped: &WrappedKey, purpose: &str) -> Result<WrappedKey, CryptoError> {
        Ok(self.wrap(&self.unwrap(wrapped, purpose)?, purpose))
    }
}

/// A key derived from a master key for one purpose, named by an id that reveals nothing of it.
#[derive(Clone, Debug)]
pub struct DerivedKey(SecretKey);

impl DerivedKey {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }
}

/// A fresh random secret for a bearer credential: 256 bits, URL-safe.
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(random::<KEY_LEN>())
}

/// How bearer secrets are stored and looked up. A plain digest suffices: they are random and
/// 256 bits long, so there is nothing to guess, and lookups stay one indexed equality.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// One contact's data key: seals that contact's personal values and nothing else.
#[derive(Clone, Debug)]
pub struct DataKey(SecretKey);

impl DataKey {
    pub fn generate() -> Self {
        Self(SecretKey::generate())
    }

    fn purpose(contact_id: &str) -> String {
        format!("rapport/contact-key/{contact_id}")
    }

    pub fn wrap(&self, masters: &MasterKeys, contact_id: &str) -> WrappedKey {
        masters.wrap(&self.0, &Self::purpose(contact_id))
    }

    pub fn unwrap(masters: &MasterKeys, wrapped: &WrappedKey, contact_id: &str) -> Result<Self, CryptoError> {
        masters.unwrap(wrapped, &Self::purpose(contact_id)).map(Self)
    }

    pub fn rewrap(masters: &MasterKeys, wrapped: &WrappedKey, contact_id: &str) -> Result<WrappedKey, CryptoError> {
        masters.rewrap(wrapped, &Self::purpose(contact_id))
    }

    /// `v1.<key id>.<base64url(nonce ‖ ciphertext)>`, bound to the contact and the field.
    pub fn seal(&self, plaintext: &str, contact_id: &str, field: &str) -> String {
        let aad = aad(&self.0.id, contact_id, field);
        let sealed = self.0.seal(plaintext.as_bytes(), &aad);
        format!("{ENVELOPE_VERSION}.{}.{}", self.0.id, URL_SAFE_NO_PAD.encode(sealed))
    }

    pub fn open(&self, envelope: &str, contact_id: &str, field: &str) -> Result<String, CryptoError> {
        let mut parts = envelope.splitn(3, '.');
        let (Some(ENVELOPE_VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Malformed);
        };
        if key_id != self.0.id {
            return Err(CryptoError::UnknownKey(key_id.to_owned()));
        }
        let sealed = URL_SAFE_NO_PAD.decode(body).map_err(|_| CryptoError::Malformed)?;
        let plaintext = self.0.open(&sealed, &aad(key_id, contact_id, field))?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Malformed)
    }
}

fn aad(key_id: &str, contact_id: &str, field: &str) -> Vec<u8> {
    format!("rapport/{ENVELOPE_VERSION}/{key_id}/{contact_id}/{field}").into_bytes()
}

/// The blind index key: a random key of its own, wrapped by the master key like a data key, so
/// that a master key rotation re-wraps it instead of recomputing every index.
#[derive(Clone, Debug)]
pub struct BlindIndexKey(SecretKey);

impl BlindIndexKey {
    const PURPOSE: &'static str = "rapport/blind-index-key";

    pub fn generate() -> Self {
        Self(SecretKey::generate())
    }

    pub fn wrap(&self, masters: &MasterKeys) -> WrappedKey {
        masters.wrap(&self.0, Self::PURPOSE)
    }

    pub fn unwrap(masters: &MasterKeys, wrapped: &WrappedKey) -> Result<Self, CryptoError> {
        masters.unwrap(wrapped, Self::PURPOSE).map(Self)
    }

    pub fn rewrap(masters: &MasterKeys, wrapped: &WrappedKey) -> Result<WrappedKey, CryptoError> {
        masters.rewrap(wrapped, Self::PURPOSE)
    }

    /// HMAC-SHA256 of an already normalised value; `kind` keeps an email and a phone number
    /// that happen to be the same string from sharing an index value.
    pub fn index(&self, kind: &str, normalised: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac_sha256(&self.0.bytes, &[kind.as_bytes(), b"\0", normalised.as_bytes()]))
    }
}

/// An outbound webhook endpoint's signing secret (Standard Webhooks), stored wrapped by the
/// master key and bound to its endpoint.
#[derive(Clone, Debug)]
pub struct WebhookSecret(SecretKey);

impl WebhookSecret {
    const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Self {
        Self(SecretKey::generate())
    }

    fn purpose(endpoint_id: &str) -> String {
        format!("rapport/webhook-secret/{endpoint_id}")
    }

    pub fn wrap(&self, masters: &MasterKeys, endpoint_id: &str) -> WrappedKey {
        masters.wrap(&self.0, &Self::purpose(endpoint_id))
    }

    pub fn unwrap(masters: &MasterKeys, wrapped: &WrappedKey, endpoint_id: &str) -> Result<Self, CryptoError> {
        masters.unwrap(wrapped, &Self::purpose(endpoint_id)).map(Self)
    }

    /// `whsec_` and the key in base64, as receivers configure it.
    pub fn to_whsec(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(self.0.bytes))
    }

    /// The `webhook-signature` header value: `v1,` and the base64 HMAC-SHA256 of
    /// `{id}.{timestamp}.{body}`.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mac = hmac_sha256(&self.0.bytes, &[message_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
        format!("v1,{}", STANDARD.encode(mac))
    }

    /// Whether `header` (space-separated `v1,<signature>` entries, as senders rotating secrets
    /// send several) holds a valid signature of the request, compared in constant time.
    pub fn verifies(&self, message_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(message_id, timestamp, body);
        header.split(' ').any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// Everything the store needs to seal, open and index personal values.
#[derive(Clone, Debug)]
pub struct KeyRing {
    pub masters: MasterKeys,
    pub blind_index: BlindIndexKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masters() -> MasterKeys {
        MasterKeys::new(MasterKey::generate(), None)
    }

    #[test]
    fn a_webhook_secret_unwraps_for_its_own_endpoint_only() {
        // The signature itself is checked by the `standardwebhooks` package in the e2e tests.
        let secret = WebhookSecret::generate();
        assert!(secret.to_whsec().starts_with("whsec_"));
        let masters = masters();
        let wrapped = secret.wrap(&masters, "endpoint-a");
        let opened = WebhookSecret::unwrap(&masters, &wrapped, "endpoint-a").unwrap();
        assert_eq!(opened.sign("msg_1", 1, b"{}"), secret.sign("msg_1", 1, b"{}"));
        assert!(WebhookSecret::unwrap(&masters, &wrapped, "endpoint-b").is_err());
        assert_ne!(secret.sign("msg_1", 1, b"{}"), secret.sign("msg_1", 2, b"{}"));
        let signed = secret.sign("msg_1", 1, b"{}");
        assert!(secret.verifies("msg_1", 1, b"{}", &format!("v1,old {signed}")), "any of several signatures");
        assert!(!secret.verifies("msg_1", 1, b"{ }", &signed));
        assert!(!WebhookSecret::generate().verifies("msg_1", 1, b"{}", &signed));
    }

    #[test]
    fn a_master_key_must_be_base64_of_32_bytes() {
        assert_eq!(MasterKey::parse("not base64!").unwrap_err(), KeyError::NotBase64);
        assert_eq!(MasterKey::parse(&STANDARD.encode([1u8; 16])).unwrap_err(), KeyError::WrongLength(16));
        let key = MasterKey::generate();
        assert_eq!(MasterKey::parse(&key.to_base64()).unwrap().id(), key.id());
    }

    #[test]
    fn a_sealed_value_opens_for_its_own_contact_and_field_only() {
        let key = DataKey::generate();
        let plaintext = "ada@example.com";
        let sealed = key.seal(plaintext, "contact-a", "email");
        // A random ciphertext may spell "ada" by chance; the whole address it never can.
        let body = URL_SAFE_NO_PAD.decode(sealed.rsplit('.').next().unwrap()).unwrap();
        assert!(!body.windows(plaintext.len()).any(|window| window == plaintext.as_bytes()));
        assert_eq!(key.open(&sealed, "contact-a", "email").unwrap(), "ada@example.com");
        assert_eq!(key.open(&sealed, "contact-b", "email").unwrap_err(), CryptoError::Forged);
        assert_eq!(key.open(&sealed, "contact-a", "phone").unwrap_err(), CryptoError::Forged);
        assert!(DataKey::generate().open(&sealed, "contact-a", "email").is_err());
    }

    #[test]
    fn the_same_value_seals_differently_each_time() {
        let key = DataKey::generate();
        assert_ne!(key.seal("x", "c", "f"), key.seal("x", "c", "f"));
    }

    #[test]
    fn a_wrapped_data_key_unwraps_only_for_its_contact() {
        let masters = masters();
        let key = DataKey::generate();
        let wrapped = key.wrap(&masters, "contact-a");
        let unwrapped = DataKey::unwrap(&masters, &wrapped, "contact-a").unwrap();
        assert_eq!(unwrapped.open(&key.seal("v", "contact-a", "f"), "contact-a", "f").unwrap(), "v");
        assert!(DataKey::unwrap(&masters, &wrapped, "contact-b").is_err());
    }

    #[test]
    fn after_a_rotation_keys_wrapped_by_either_master_key_unwrap() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let before = MasterKeys::new(old.clone(), None);
        let key = DataKey::generate();
        let wrapped_old = key.wrap(&before, "c");
        let during = MasterKeys::new(new.clone(), Some(old));
        let wrapped_new = DataKey::rewrap(&during, &wrapped_old, "c").unwrap();
        assert_eq!(wrapped_new.master_key_id, new.id());
        assert!(DataKey::unwrap(&during, &wrapped_old, "c").is_ok());
        assert!(DataKey::unwrap(&during, &wrapped_new, "c").is_ok());
        let after = MasterKeys::new(new, None);
        assert_eq!(
            DataKey::unwrap(&after, &wrapped_old, "c").unwrap_err(),
            CryptoError::UnknownKey(wrapped_old.master_key_id.clone())
        );
    }

    #[test]
    fn the_blind_index_depends_on_key_kind_and_value() {
        let key = BlindIndexKey::generate();
        assert_eq!(key.index("email", "a@b.c"), key.index("email", "a@b.c"));
        assert_ne!(key.index("email", "a@b.c"), key.index("phone", "a@b.c"));
        assert_ne!(key.index("email", "a@b.c"), BlindIndexKey::generate().index("email", "a@b.c"));
    }
}
