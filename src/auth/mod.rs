//! Identity: verifies the `authorization: Bearer <JWT>` of every call with one
//! piece of code ([`Authenticator::authenticate`]) and produces the typed
//! [`Caller`] that every data path requires. Also mints development tokens
//! for `crm token`.

mod keys;
pub mod scope;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use keys::{DEV_SECRET, JWKS_FILE_POLL, KeyConfig, Keys, watch_jwks_file};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
const MAX_ID_LEN: usize = 128;

/// Who is calling: the tenant every row belongs to, the person (`sub`), and
/// for integration tokens the application. Only [`Authenticator`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    tenant_id: String,
    sub: String,
    app_id: Option<String>,
    /// The token's `scope` claim, split at spaces (`None`: no claim).
    scopes: Option<std::sync::Arc<[String]>>,
}

impl Caller {
    /// The caller's tenant.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    /// The person id (`sub`).
    pub fn sub(&self) -> &str {
        &self.sub
    }
    /// The integration's application id, for integration tokens.
    pub fn app_id(&self) -> Option<&str> {
        self.app_id.as_deref()
    }

    /// The same caller with the app scope of an integration token lifted
    /// (the tenant's records of every app), for a whole transaction that
    /// has first checked what the caller may see (erasure: a record takes
    /// its children and the references to it with it, whichever app wrote
    /// them).
    pub fn across_apps(&self) -> Self {
        Self {
            app_id: None,
            ..self.clone()
        }
    }

    /// Whether the token grants a call that requires `required` (see
    /// [`scope`]): a token without a `scope` claim may do everything but
    /// erase.
    pub fn may(&self, required: &str) -> bool {
        scope::grants(self.scopes.as_deref(), required)
    }

    /// Refuses the call unless the token grants `required`:
    /// PERMISSION_DENIED, reason MISSING_SCOPE, metadata `required_scope`.
    pub fn require(&self, required: &str) -> Result<(), Error> {
        if self.may(required) {
            Ok(())
        } else {
            Err(Error::MissingScope {
                required: required.to_owned(),
            })
        }
    }

    /// Whether the token may read the records of `collection` (a REST
    /// collection name).
    pub fn can_read(&self, collection: &str) -> bool {
        self.may(&scope::read_of(collection))
    }

    /// A caller made without a token, for unit tests of the layers below.
    #[cfg(test)]
    pub(crate) fn unchecked(tenant_id: &str, sub: &str, app_id: Option<&str>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            sub: sub.into(),
            app_id: app_id.map(Into::into),
            scopes: None,
        }
    }
}

/// The claims this service reads. `exp` is required; `iss`/`aud` are checked
/// by `jsonwebtoken` when configured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Tenant of every record the caller touches.
    pub tenant_id: String,
    /// Person id.
    pub sub: String,
    /// Integration application id (integration tokens only). `Some(None)` is
    /// an explicit `null`, which is refused: it must not quietly turn an
    /// integration token into a person's (whole-tenant) token.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub app_id: Option<Option<String>>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer (minted when configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (minted when configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Scopes, space-separated (RFC 8693 §4.2). Without it a token may do
    /// everything but erase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Deserializes a claim that may be absent (`None`, through `default`), null
/// (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A `sub` this service can stamp on records exactly as given: 1–256 bytes,
/// no surrounding whitespace (it would otherwise be trimmed, altering the
/// identity), no control characters.
fn valid_sub(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.trim() == s && !s.chars().any(char::is_control)
}

/// Verifies bearer tokens against the configured keys, issuer and audience.
pub struct Authenticator {
    /// Swapped whole when a JWKS file changes ([`keys::watch_jwks_file`]).
    keys: std::sync::RwLock<std::sync::Arc<Keys>>,
    issuer: Option<String>,
    audience: Option<String>,
}

fn unauthenticated(message: &str) -> Error {
    Error::Unauthenticated {
        reason: "INVALID_CREDENTIALS",
        message: message.to_owned(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

impl Authenticator {
    /// An authenticator over `keys`, enforcing `issuer` and `audience` when set.
    pub fn new(keys: Keys, issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            issuer,
            audience,
        }
    }

    /// Verifies with `keys` from now on (calls under way keep theirs).
    pub fn set_keys(&self, keys: Keys) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(keys);
    }

    /// Checks the value of an `authorization` header / metadata entry and
    /// returns the caller. Every failure is `UNAUTHENTICATED`; nothing here
    /// touches the database.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        let Some(value) = authorization else {
            return Err(Error::Unauthenticated {
                reason: "MISSING_CREDENTIALS",
                message: "missing bearer token (authorization: Bearer <JWT>)".into(),
            });
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthenticated("authorization must be \"Bearer <JWT>\""))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthenticated("token too large"));
        }
        let header = decode_header(token).map_err(|_| unauthenticated("malformed token"))?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions listed in `crit` must be
            // understood, and this service understands none.
            return Err(unauthenticated("token has critical header extensions"));
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (key, alg) = keys
            .find(header.kid.as_deref(), header.alg)
            .ok_or_else(|| unauthenticated("token not signed by a known key"))?;

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        let data = decode::<Claims>(token, key, &validation).map_err(|e| {
            tracing::debug!(error = %e, "token rejected");
            unauthenticated("invalid or expired token")
        })?;
        let claims = data.claims;
        if claims.iat.is_some_and(|iat| iat > now_secs() + LEEWAY_SECS) {
            return Err(unauthenticated("token issued in the future"));
        }
        if !valid_id(&claims.tenant_id) {
            return Err(unauthenticated("token has no valid tenant_id"));
        }
        if !valid_sub(&claims.sub) {
            return Err(unauthenticated("token has no valid sub"));
        }
        let app_id = match claims.app_id {
            None => None,
            Some(Some(app)) if valid_id(&app) => Some(app),
            Some(_) => return Err(unauthenticated("token has an invalid app_id")),
        };
        let scopes = claims.scope.map(|s| {
            s.split(' ')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        });
        Ok(Caller {
            tenant_id: claims.tenant_id,
            sub: claims.sub,
            app_id,
            scopes,
        })
    }
}

/// Mints an HS256 token for `crm token` and tests.
pub fn mint(
    secret: &[u8],
    tenant_id: &str,
    sub: &str,
    app_id: Option<&str>,
    ttl_secs: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    mint_scoped(
        secret, tenant_id, sub, app_id, None, ttl_secs, issuer, audience,
    )
}

/// [`mint`] with a `scope` claim (space-separated scopes).
#[allow(clippy::too_many_arguments)]
pub fn mint_scoped(
    secret: &[u8],
    tenant_id: &str,
    sub: &str,
    app_id: Option<&str>,
    scope: Option<&str>,
    ttl_secs: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    let now = now_secs();
    let claims = Claims {
        tenant_id: tenant_id.to_owned(),
        sub: sub.to_owned(),
        app_id: app_id.map(|a| Some(a.to_owned())),
        exp: now + ttl_secs,
        iat: Some(now),
        nbf: None,
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
        scope: scope.map(str::to_owned),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(
            Keys::load(&KeyConfig {
                secret: Some(DEV_SECRET.into()),
                jwks_file: None,
            })
            .unwrap(),
            None,
            None,
        )
    }

    #[test]
    fn accepts_a_minted_token() {
        let t = mint(
            DEV_SECRET.as_bytes(),
            "t1",
            "u1",
            Some("app1"),
            60,
            None,
            None,
        )
        .unwrap();
        let c = auth().authenticate(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(
            (c.tenant_id(), c.sub(), c.app_id()),
            ("t1", "u1", Some("app1"))
        );
    }

    #[test]
    fn rejects_missing_and_malformed() {
        let a = auth();
        for h in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer a.b.c"),
        ] {
            assert!(matches!(
                a.authenticate(h),
                Err(Error::Unauthenticated { .. })
            ));
        }
    }

    #[test]
    fn rejects_bad_tenant_and_oversized_tokens() {
        let t = mint(DEV_SECRET.as_bytes(), "", "u1", None, 60, None, None).unwrap();
        assert!(auth().authenticate(Some(&format!("Bearer {t}"))).is_err());
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(auth().authenticate(Some(&big)).is_err());
    }

    fn signed(claims: serde_json::Value, header: Header) -> String {
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn identities_are_taken_exactly_or_refused() {
        let exp = now_secs() + 60;
        let ok = |claims: serde_json::Value| {
            auth().authenticate(Some(&format!(
                "Bearer {}",
                signed(claims, Header::new(Algorithm::HS256))
            )))
        };
        for sub in ["", "   ", " u1", "u1 ", "u\u{0}1", "u\n1", &"x".repeat(257)] {
            assert!(
                ok(serde_json::json!({"tenant_id": "t", "sub": sub, "exp": exp})).is_err(),
                "{sub:?}"
            );
        }
        let c =
            ok(serde_json::json!({"tenant_id": "t", "sub": "Ada Lovelace", "exp": exp})).unwrap();
        assert_eq!(c.sub(), "Ada Lovelace");
        // An explicit null app_id is refused, not read as a person's token.
        assert!(
            ok(serde_json::json!({"tenant_id": "t", "sub": "u", "app_id": null, "exp": exp}))
                .is_err()
        );
        assert!(
            ok(serde_json::json!({"tenant_id": "t", "sub": "u", "app_id": "", "exp": exp}))
                .is_err()
        );
        let c = ok(serde_json::json!({"tenant_id": "t", "sub": "u", "app_id": "a1", "exp": exp}))
            .unwrap();
        assert_eq!(c.app_id(), Some("a1"));
        assert_eq!(
            ok(serde_json::json!({"tenant_id": "t", "sub": "u", "exp": exp}))
                .unwrap()
                .app_id(),
            None
        );
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let exp = now_secs() + 60;
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let t = signed(
            serde_json::json!({"tenant_id": "t", "sub": "u", "exp": exp}),
            header,
        );
        assert!(auth().authenticate(Some(&format!("Bearer {t}"))).is_err());
    }

    #[test]
    fn enforces_issuer_and_audience_when_configured() {
        let keys = || {
            Keys::load(&KeyConfig {
                secret: Some(DEV_SECRET.into()),
                jwks_file: None,
            })
            .unwrap()
        };
        let a = Authenticator::new(keys(), Some("iss1".into()), Some("aud1".into()));
        let good = mint(
            DEV_SECRET.as_bytes(),
            "t",
            "u",
            None,
            60,
            Some("iss1"),
            Some("aud1"),
        )
        .unwrap();
        assert!(a.authenticate(Some(&format!("Bearer {good}"))).is_ok());
        for (iss, aud) in [
            (None, Some("aud1")),
            (Some("iss1"), None),
            (Some("x"), Some("aud1")),
            (Some("iss1"), Some("x")),
        ] {
            let t = mint(DEV_SECRET.as_bytes(), "t", "u", None, 60, iss, aud).unwrap();
            assert!(
                a.authenticate(Some(&format!("Bearer {t}"))).is_err(),
                "{iss:?} {aud:?}"
            );
        }
    }
}
