//! Verification keys: an HS256 shared secret and/or the public keys of a JWKS
//! file (RS256, ES256, EdDSA), each key pinned to exactly one algorithm so that
//! a token can never pick how it is verified (no `none`, no HS/RS confusion).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The development secret shared by `crm serve --dev` and `crm token`.
/// Never accepted unless the server runs with `--dev`.
pub const DEV_SECRET: &str = "crm-development-secret-not-for-production-use";

/// Minimum length of `CRM_JWT_SECRET` (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// Where the keys come from.
#[derive(Clone, Debug, Default)]
pub struct KeyConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// Path of a JWKS file with public keys.
    pub jwks_file: Option<PathBuf>,
}

struct PublicKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The loaded keys.
pub struct Keys {
    hmac: Option<DecodingKey>,
    public: Vec<PublicKey>,
}

impl Keys {
    /// Loads the configured keys; fails when none is configured or a key is
    /// unusable.
    pub fn load(config: &KeyConfig) -> anyhow::Result<Self> {
        let hmac = match &config.secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                bail!("CRM_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let mut public = Vec::new();
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading JWKS file {}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("parsing JWKS file {}", path.display()))?;
            for jwk in &set.keys {
                let inferred = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                        Algorithm::EdDSA
                    }
                    _ => bail!(
                        "JWKS key {:?}: only RSA, EC P-256 and Ed25519 public keys are supported",
                        jwk.common.key_id
                    ),
                };
                if let Some(declared) = jwk.common.key_algorithm {
                    let declared = Algorithm::try_from(declared).ok();
                    if declared != Some(inferred) {
                        bail!(
                            "JWKS key {:?}: alg {:?} does not match its key type (expected {inferred:?})",
                            jwk.common.key_id,
                            declared
                        );
                    }
                }
                public.push(PublicKey {
                    kid: jwk.common.key_id.clone(),
                    alg: inferred,
                    key: DecodingKey::from_jwk(jwk)
                        .with_context(|| format!("JWKS key {:?}", jwk.common.key_id))?,
                });
            }
        }
        if hmac.is_none() && public.is_empty() {
            bail!(
                "no JWT key configured: set CRM_JWT_SECRET and/or CRM_JWT_JWKS_FILE (or run `crm serve --dev`)"
            );
        }
        Ok(Self { hmac, public })
    }

    /// The key that verifies a token whose header says `alg` (and `kid`), with
    /// the one algorithm it is pinned to. `None` when no key matches.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<(&DecodingKey, Algorithm)> {
        if alg == Algorithm::HS256 {
            return self.hmac.as_ref().map(|k| (k, Algorithm::HS256));
        }
        let mut candidates = self.public.iter().filter(|k| k.alg == alg);
        let found = match kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)),
            // Without a kid, only an unambiguous key set can answer.
            None => {
                let first = candidates.next();
                if candidates.next().is_some() {
                    None
                } else {
                    first
                }
            }
        };
        found.map(|k| (&k.key, k.alg))
    }
}

/// How often a JWKS file is looked at for changes.
pub const JWKS_FILE_POLL: Duration = Duration::from_secs(2);

/// The file's modification time and size: a change of either is a new file
/// (an editor's write, a rename over it, a Kubernetes secret update).
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads the JWKS file of `config` every `poll` when it has changed and
/// gives `auth` the new keys; a file that cannot be read or holds an
/// unusable key is logged and the keys in use stay (a rotation half-written
/// never locks everyone out). Runs until the task is dropped.
pub async fn watch_jwks_file(auth: Arc<super::Authenticator>, config: KeyConfig, poll: Duration) {
    let Some(path) = config.jwks_file.clone() else {
        return;
    };
    let mut seen = stamp(&path);
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Keys::load(&config) {
            Ok(keys) => {
                auth.set_keys(keys);
                tracing::info!(path = %path.display(), "JWKS file changed: keys reloaded");
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %format!("{e:#}"),
                "JWKS file changed but cannot be used; the keys in use stay"
            ),
        }
    }
}
