//! Page tokens: keyset cursors (the last row's sort keys, as Postgres wrote
//! them), signed with HMAC-SHA256 over the cursor and everything the token is
//! bound to (tenant, app, entity, filter, order_by, search, show_deleted).
//! Opaque and URL-safe; a token altered, forged, or reused with other
//! parameters is INVALID_ARGUMENT.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, invalid};

const VERSION: u8 = 1;
/// Longest token accepted. Tokens hold up to five sort keys of at most
/// 1,024 characters (free-text fields cannot be sorted on) and an id.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;

/// The key page tokens are signed with.
#[derive(Clone)]
pub struct PageKey(std::sync::Arc<[u8]>);

/// The position after which the next page starts: the sort keys of the
/// last row (text, `None` for NULL), ending with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The keys.
    pub keys: Vec<Option<String>>,
}

impl PageKey {
    /// A key from secret bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.into())
    }

    fn mac(&self, binding: &[&str], payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        for part in binding {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(payload);
        mac
    }

    /// The token for `cursor`, bound to `binding`.
    pub fn encode(&self, binding: &[&str], cursor: &Cursor) -> String {
        let mut payload = vec![VERSION];
        serde_json::to_writer(&mut payload, &cursor.keys).expect("strings serialize");
        let tag = self.mac(binding, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The cursor of `token`, if it was made by this key for `binding`.
    pub fn decode(&self, binding: &[&str], token: &str) -> Result<Cursor, Error> {
        let bad = || {
            invalid(
                "page_token",
                "is not a page token of this list (it was altered, or made for other parameters)",
            )
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        if raw.len() < 1 + TAG_LEN || raw[0] != VERSION {
            return Err(bad());
        }
        let (payload, tag) = raw.split_at(raw.len() - TAG_LEN);
        self.mac(binding, payload)
            .verify_truncated_left(tag)
            .map_err(|_| bad())?;
        let keys = serde_json::from_slice(&payload[1..]).map_err(|_| bad())?;
        Ok(Cursor { keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            keys: vec![
                Some("2026-11-27 14:00:00.123456+00".into()),
                None,
                Some("acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into()),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let k = PageKey::new(b"k");
        let t = k.encode(&["t1", "", "accounts"], &cursor());
        assert_eq!(k.decode(&["t1", "", "accounts"], &t).unwrap(), cursor());
    }

    #[test]
    fn rejects_other_bindings_keys_and_tampering() {
        let k = PageKey::new(b"k");
        let t = k.encode(&["t1", "", "accounts"], &cursor());
        assert!(k.decode(&["t2", "", "accounts"], &t).is_err());
        assert!(k.decode(&["t1", "app", "accounts"], &t).is_err());
        assert!(
            PageKey::new(b"other")
                .decode(&["t1", "", "accounts"], &t)
                .is_err()
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[3] ^= 1;
        assert!(
            k.decode(&["t1", "", "accounts"], &URL_SAFE_NO_PAD.encode(raw))
                .is_err()
        );
        assert!(k.decode(&["t1", "", "accounts"], "%%%").is_err());
        assert!(k.decode(&["t1", "", "accounts"], "").is_err());
    }

    #[test]
    fn binding_parts_cannot_be_shifted() {
        let k = PageKey::new(b"k");
        let t = k.encode(&["ab", "c"], &cursor());
        assert!(k.decode(&["a", "bc"], &t).is_err());
    }
}
