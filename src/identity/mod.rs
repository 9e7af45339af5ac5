//! Authentication: `Authorization: Bearer <JWT>` → [`Principal`].
//!
//! Invariants:
//! - Keys come only from the issuer's own JWKS (or the dev issuer's key file). Header
//!   key sources (`jku`, `x5u`, `jwk`, `x5c`) are never consulted.
//! - The algorithm must be one of RS256 / ES256 / EdDSA *and* match the key's type, so an
//!   RSA public key can never be used as an HMAC secret and `alg: none` never verifies.
//! - `exp`, `iss`, `aud`, `sub` are required; `nbf` is honoured; the audience is mandatory
//!   per issuer. A principal is the pair (issuer, subject).

pub mod dev;
pub mod jwks;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;

use crate::config::{Config, IssuerConfig, PrincipalKind};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Principal {
    /// The configured issuer's name (not the `iss` URL).
    pub issuer: String,
    pub subject: String,
    pub kind: PrincipalKind,
    pub groups: Vec<String>,
    /// RFC 8693 `act` chain, outermost first: who acts on whose behalf.
    pub actor: Vec<String>,
}

impl Principal {
    /// `ISSUER/SUBJECT`, the form rules use after `sub:`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("the issuer's keys cannot be fetched right now")]
    KeysUnavailable,
}

/// Key material an issuer offers for verification.
pub(crate) struct VerifyKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

enum KeySource {
    Dev(Arc<VerifyKey>),
    Jwks(Box<jwks::JwksCache>),
}

struct TrustedIssuer {
    config: IssuerConfig,
    keys: KeySource,
}

pub struct Authenticator {
    by_iss: HashMap<String, TrustedIssuer>,
    /// Principals of tokens already verified, keyed by a digest of the whole token.
    verified: std::sync::Mutex<HashMap<[u8; 32], (Principal, i64)>>,
}

/// How many verified tokens are remembered; past it the cache starts over.
const VERIFIED_CACHE: usize = 10_000;
/// A verified token is trusted from the cache for at most this long (and never past `exp`),
/// so a rotated-out issuer key stops working within it.
const VERIFIED_TTL_SECS: i64 = 60;

const ALLOWED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

impl Authenticator {
    /// The issuers (`iss`) a client can get a token from, for discovery (RFC 9728
    /// protected-resource metadata): the configured OIDC issuers, sorted. The dev issuer is
    /// not one: its tokens come from `airlock token`.
    pub fn authorization_servers(&self) -> Vec<String> {
        let mut issuers: Vec<String> = self
            .by_iss
            .values()
            .filter(|t| !t.config.dev)
            .map(|t| t.config.issuer.clone())
            .collect();
        issuers.sort();
        issuers
    }

    /// Builds verifiers for every configured issuer. The dev issuer's key must exist (or is
    /// created) in `data_dir`.
    pub fn new(config: Config, data_dir: &std::path::Path) -> Result<Authenticator, String> {
        let mut by_iss = HashMap::new();
        for iss in config.issuers {
            // Groups are how rules and masking exemptions name principals: an issuer that may
            // assert none is almost always a forgotten key, so say so once at startup.
            if iss.allowed_groups.is_empty() {
                tracing::warn!(
                    issuer = %iss.name,
                    "issuer `{}` has no allowed_groups: groups in its tokens will be ignored \
                     (rules with `group:` match none of its principals); list the groups it may \
                     assert in `allowed_groups` (globs, e.g. [\"agents\", \"team-*\"])",
                    iss.name
                );
            }
            let keys = if iss.dev {
                let key = dev::DevIssuer::load_or_create(data_dir)?;
                KeySource::Dev(Arc::new(VerifyKey {
                    alg: Algorithm::EdDSA,
                    key: key.decoding_key(),
                }))
            } else {
                KeySource::Jwks(Box::new(jwks::JwksCache::new(&iss)?))
            };
            by_iss.insert(iss.issuer.clone(), TrustedIssuer { config: iss, keys });
        }
        Ok(Authenticator {
            by_iss,
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Fetches every issuer's JWKS once so the first request does not pay for it. Failure is
    /// logged, not fatal: the cache retries on demand.
    pub async fn warm_up(&self) {
        for t in self.by_iss.values() {
            if let KeySource::Jwks(cache) = &t.keys
                && let Err(e) = cache.refresh().await
            {
                tracing::warn!(issuer = %t.config.name, error = %e, "JWKS not fetched at startup");
            }
        }
    }

    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = header
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        // The same bytes verified a moment ago verify the same way: skip the signature check.
        let digest: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.verified.lock()
            && let Some((p, until)) = cache.get(&digest)
            && now < *until
        {
            return Ok(p.clone());
        }
        let (principal, exp) = self.verify(token).await?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE {
                cache.clear();
            }
            cache.insert(
                digest,
                (principal.clone(), exp.min(now + VERIFIED_TTL_SECS)),
            );
        }
        Ok(principal)
    }

    /// Full verification; returns the principal and the token's `exp`.
    async fn verify(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let iss = unverified_issuer(token)?;
        let trusted = self.by_iss.get(&iss).ok_or(AuthError::UnknownIssuer)?;
        let claims = self
            .verified_claims(trusted, token, &trusted.config.audience)
            .await?;
        let exp = claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(0);
        Ok((principal_from_claims(&trusted.config, &claims)?, exp))
    }

    /// The configured issuer of this name.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.by_iss
            .values()
            .map(|t| &t.config)
            .find(|c| c.name == name)
    }

    /// Issuers people can sign in to the console with (OIDC), by name.
    pub fn console_issuers(&self) -> Vec<&IssuerConfig> {
        let mut out: Vec<&IssuerConfig> = self
            .by_iss
            .values()
            .map(|t| &t.config)
            .filter(|c| c.console.is_some())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The dev issuer's name, when one is configured.
    pub fn dev_issuer(&self) -> Option<&str> {
        self.by_iss
            .values()
            .find(|t| t.config.dev)
            .map(|t| t.config.name.as_str())
    }

    /// The discovery endpoints of an OIDC issuer, for the console's sign-in.
    pub async fn endpoints(&self, issuer: &str) -> Result<jwks::Endpoints, String> {
        match self.by_iss.values().find(|t| t.config.name == issuer) {
            Some(TrustedIssuer {
                keys: KeySource::Jwks(cache),
                ..
            }) => cache.endpoints().await,
            _ => Err(format!("`{issuer}` is not an OIDC issuer")),
        }
    }

    /// POSTs a form to an endpoint of the issuer, with its HTTP limits (the code exchange).
    pub async fn post_form(
        &self,
        issuer: &str,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<serde_json::Value, String> {
        match self.by_iss.values().find(|t| t.config.name == issuer) {
            Some(TrustedIssuer {
                keys: KeySource::Jwks(cache),
                ..
            }) => cache.post_form(url, form, basic).await,
            _ => Err(format!("`{issuer}` is not an OIDC issuer")),
        }
    }

    /// Verifies an OpenID Connect ID token from the console's sign-in: signed by the named
    /// issuer's keys, for `client_id` (`aud`, and `azp` when present), carrying `nonce`.
    pub async fn verify_id_token(
        &self,
        issuer: &str,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Principal, AuthError> {
        let trusted = self
            .by_iss
            .values()
            .find(|t| t.config.name == issuer)
            .ok_or(AuthError::UnknownIssuer)?;
        if unverified_issuer(token)? != trusted.config.issuer {
            return Err(AuthError::UnknownIssuer);
        }
        let claims = self.verified_claims(trusted, token, client_id).await?;
        if let Some(azp) = claims.get("azp").and_then(|v| v.as_str())
            && azp != client_id
        {
            return Err(AuthError::Invalid(
                "the ID token is for another client (azp)".into(),
            ));
        }
        let token_nonce = claims.get("nonce").and_then(|v| v.as_str()).unwrap_or("");
        if !crate::digest::constant_time_eq(token_nonce.as_bytes(), nonce.as_bytes()) {
            return Err(AuthError::Invalid(
                "the ID token's nonce does not match this sign-in".into(),
            ));
        }
        principal_from_claims(&trusted.config, &claims)
    }

    /// Signature, algorithm, issuer, audience and time checks; the verified claims.
    async fn verified_claims(
        &self,
        trusted: &TrustedIssuer,
        token: &str,
        audience: &str,
    ) -> Result<serde_json::Value, AuthError> {
        let jwt_header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if !ALLOWED.contains(&jwt_header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted (RS256, ES256, EdDSA only)",
                jwt_header.alg
            )));
        }
        let key = match &trusted.keys {
            KeySource::Dev(k) => k.clone(),
            KeySource::Jwks(cache) => cache.key(jwt_header.kid.as_deref(), jwt_header.alg).await?,
        };
        if key.alg != jwt_header.alg {
            return Err(AuthError::Invalid(
                "token algorithm does not match the key's algorithm".into(),
            ));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[trusted.config.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let dev = matches!(trusted.keys, KeySource::Dev(_));
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(describe_jwt_error(&e, dev)))?;
        Ok(data.claims)
    }
}

/// What the 401 says. `dev`: the issuer is the local dev issuer, whose only usual cause of a
/// bad signature is a token minted with another data directory's key; saying so names no key
/// material or path, only the command that mints a good token.
fn describe_jwt_error(e: &jsonwebtoken::errors::Error, dev: bool) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature if dev => "the signature does not verify: the token was signed by a \
            different dev key; mint tokens with `airlock token` using the server's data \
            directory (the same --data-dir or AIRLOCK_DATA_DIR)"
            .into(),
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidAudience => "the token is not for this audience".into(),
        K::InvalidIssuer => "the token issuer does not match".into(),
        K::InvalidSignature => "the signature does not verify".into(),
        K::MissingRequiredClaim(c) => format!("the token lacks the required claim `{c}`"),
        K::InvalidAlgorithm => "algorithm mismatch".into(),
        other => format!("{other:?}"),
    }
}

/// Reads `iss` from the payload without trusting it: it only selects which issuer's keys
/// verify the signature, and the verified claims are checked against it again.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| AuthError::Malformed("not a JWS compact token".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("payload is not base64url".into()))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("payload is not JSON".into()))?;
    claims
        .get("iss")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| AuthError::Invalid("the token lacks the required claim `iss`".into()))
}

fn principal_from_claims(
    config: &IssuerConfig,
    claims: &serde_json::Value,
) -> Result<Principal, AuthError> {
    let subject = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Invalid("`sub` must be a non-empty string".into()))?
        .to_string();
    let kind = match (&config.principal_kind, &config.kind_claim) {
        (Some(k), _) => *k,
        (None, Some(claim)) => match claims.get(claim).and_then(|v| v.as_str()) {
            Some("human") => PrincipalKind::Human,
            Some("agent") => PrincipalKind::Agent,
            _ => {
                return Err(AuthError::Invalid(format!(
                    "claim `{claim}` must be \"agent\" or \"human\""
                )));
            }
        },
        // Config validation guarantees one of the two; an agent is the least-privileged kind.
        (None, None) => PrincipalKind::Agent,
    };
    // Only groups this issuer may assert are kept.
    let allowed = |g: &&str| config.allows_group(g);
    let groups = match claims.get(&config.groups_claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .filter(allowed)
            .map(str::to_string)
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split_whitespace()
            .filter(allowed)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Principal {
        issuer: config.name.clone(),
        subject,
        kind,
        groups,
        actor: actor_chain(claims.get("act")),
    })
}

/// Flattens RFC 8693 nested `act` claims (`{"sub": "a", "act": {"sub": "b"}}`) into
/// `["a", "b"]`: the current actor first, then who delegated to it. Depth is bounded.
fn actor_chain(mut act: Option<&serde_json::Value>) -> Vec<String> {
    let mut chain = Vec::new();
    while let Some(a) = act {
        if chain.len() >= 8 {
            chain.push("…".to_string());
            break;
        }
        match a.get("sub").and_then(|s| s.as_str()) {
            Some(sub) => chain.push(sub.to_string()),
            None => break,
        }
        act = a.get("act");
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_chain_flattens() {
        let v = serde_json::json!({"sub":"a","act":{"sub":"b","act":{"sub":"c"}}});
        assert_eq!(actor_chain(Some(&v)), vec!["a", "b", "c"]);
        assert!(actor_chain(None).is_empty());
    }
}
