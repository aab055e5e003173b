//! WireGuard keys, made in-process: x25519 key pairs in WireGuard's text form (base64 of the
//! 32 key bytes), so no private key ever appears on a command line.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A WireGuard private key: 32 random bytes, clamped as `wg genkey` clamps them.
///
/// Its `Debug` form hides the key; [`PrivateKey::to_base64`] gives the text form that
/// `wg setconf` reads.
///
/// ```
/// use harness::network::PrivateKey;
/// let key = PrivateKey::generate().unwrap();
/// assert_eq!(key.to_base64().len(), 44);
/// assert_eq!(key.public_key().to_base64().len(), 44);
/// ```
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

/// A WireGuard public key, derived from a [`PrivateKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PrivateKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> std::io::Result<PrivateKey> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        Ok(PrivateKey::from_bytes(bytes))
    }

    /// The key with these bytes, clamped (Curve25519's rule: the low 3 bits and the top bit
    /// cleared, the second-highest bit set), as WireGuard stores private keys.
    pub fn from_bytes(mut bytes: [u8; 32]) -> PrivateKey {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        PrivateKey(bytes)
    }

    /// Reads a key in WireGuard's text form (base64 of 32 bytes), as `wg genkey` writes it.
    pub fn from_base64(text: &str) -> Result<PrivateKey, KeyError> {
        decode(text).map(PrivateKey::from_bytes)
    }

    /// The key in WireGuard's text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Its public key (`wg pubkey`).
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(hidden)")
    }
}

impl PublicKey {
    /// Reads a key in WireGuard's text form.
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        decode(text).map(PublicKey)
    }

    /// The key in WireGuard's text form, as `wg pubkey` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A key that is not WireGuard's text form.
#[derive(Debug, thiserror::Error)]
#[error("read a WireGuard key: {0}")]
pub struct KeyError(String);

fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError(format!("not base64 ({e})")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| KeyError(format!("{} bytes, not 32", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_clamped_and_round_trip() {
        let key = PrivateKey::from_bytes([0xff; 32]);
        let bytes = STANDARD.decode(key.to_base64()).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        let again = PrivateKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(format!("{key:?}"), "PrivateKey(hidden)");
    }

    #[test]
    fn a_known_pair_matches_the_reference() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            private.public_key(),
            PublicKey(hex(
                "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
            ))
        );
    }

    #[test]
    fn bad_text_is_refused() {
        assert!(PublicKey::from_base64("not a key").is_err());
        let short = STANDARD.encode([1u8; 16]);
        let err = PublicKey::from_base64(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes, not 32"), "{err}");
    }

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
