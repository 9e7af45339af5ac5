//! The local development issuer: an Ed25519 key in the data directory.
//!
//! Invariants: the key file is created with mode 0600 (see `keyfile`) and never leaves the
//! data directory;
//! the server refuses to run a dev issuer on a non-loopback listener (see `server`).

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

use crate::config::{IssuerConfig, PrincipalKind};

pub const KEY_FILE: &str = "dev-issuer.ed25519.pk8";

pub struct DevIssuer {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

/// What to put in a dev token.
pub struct TokenRequest<'a> {
    pub subject: &'a str,
    pub groups: &'a [String],
    pub kind: PrincipalKind,
    pub act: Option<&'a str>,
    pub lifetime_secs: u64,
}

impl DevIssuer {
    pub fn key_path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// The server's side: the key in `data_dir`, created on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<DevIssuer, String> {
        let path = Self::key_path(data_dir);
        let pkcs8 = crate::keyfile::load_or_create(&path, "dev issuer key", || {
            Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|_| "cannot generate the dev issuer key".to_string())
        })?;
        Self::from_pkcs8(&path, pkcs8)
    }

    /// The minting side (`airlock token`): the key the server created in `data_dir`, or
    /// `None`. Never creates one: a key of its own would sign tokens the server rejects.
    pub fn load(data_dir: &Path) -> Result<Option<DevIssuer>, String> {
        let path = Self::key_path(data_dir);
        match crate::keyfile::load_existing(&path, "dev issuer key")? {
            Some(pkcs8) => Self::from_pkcs8(&path, pkcs8).map(Some),
            None => Ok(None),
        }
    }

    fn from_pkcs8(path: &Path, pkcs8: Vec<u8>) -> Result<DevIssuer, String> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| format!("{} is not an Ed25519 PKCS#8 key", path.display()))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(DevIssuer { pkcs8, public })
    }

    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(&self.public)
    }

    pub fn mint(&self, issuer: &IssuerConfig, req: &TokenRequest<'_>) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "iss": issuer.issuer,
            "aud": issuer.audience,
            "sub": req.subject,
            "iat": now,
            "nbf": now,
            "exp": now + req.lifetime_secs as i64,
            issuer.groups_claim.clone(): req.groups,
        });
        if let Some(claim) = &issuer.kind_claim {
            claims[claim] = json!(req.kind.to_string());
        }
        if let Some(act) = req.act {
            claims["act"] = json!({ "sub": act });
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("dev".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| format!("cannot sign the token: {e}"))
    }
}
