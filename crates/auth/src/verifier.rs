//! [`JwtVerifier`]: in-process token verification.
//!
//! Order of checks for each token:
//! 1. empty -> [`AuthError::Missing`]; longer than [`MAX_TOKEN_LEN`] ->
//!    invalid (bounded work per attempt);
//! 2. the header's `alg` must equal the configured algorithm (so `none`,
//!    and an HS256 token signed with an RSA public key, are refused before
//!    any key is touched); for a JWK set the header's `kid` picks the key;
//! 3. signature, against each configured key in turn (key rotation);
//! 4. `exp` (required), `nbf` (when present), `iss` / `aud` (when
//!    configured), with the leeway;
//! 5. `sub` must be a valid [`UserId`].
//!
//! Refusal reasons are fixed phrases: they never echo the token or claim
//! values back.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgepush_core::{AuthError, Identity, TokenVerifier, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{AuthConfig, ConfigError, KeyConfig, PublicKeyAlgorithm};

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; the
/// cap bounds the work an attacker can cause per attempt.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies JWTs against a pinned algorithm and configured keys.
///
/// Cheap to share: wrap it in an `Arc` and hand it to every connection.
pub struct JwtVerifier {
    /// The only algorithm tokens may use.
    algorithm: Algorithm,
    /// The keys, by position (PEM, secret) or by `kid` (JWK set).
    keys: Keys,
    /// jsonwebtoken's claim checks, built once from the config.
    validation: Validation,
}

enum Keys {
    /// Try each in order; the first whose signature matches decides.
    List(Vec<DecodingKey>),
    /// The token's `kid` names the one key to use.
    ByKid(HashMap<String, DecodingKey>),
}

impl fmt::Debug for JwtVerifier {
    // By hand: key material (an HS256 secret above all) is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("JwtVerifier");
        d.field("algorithm", &self.algorithm);
        match &self.keys {
            Keys::List(keys) => d.field("keys", &keys.len()),
            Keys::ByKid(keys) => d.field("kids", &keys.keys().collect::<Vec<_>>()),
        };
        d.field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_secs", &self.validation.leeway)
            .finish()
    }
}

impl JwtVerifier {
    /// Builds a verifier, parsing and checking every key up front so that a
    /// bad key fails at start-up rather than on the first connection.
    pub fn new(config: AuthConfig) -> Result<Self, ConfigError> {
        crate::config::check_leeway(config.leeway)?;
        let (algorithm, keys) = match &config.key {
            KeyConfig::Hs256 { secret } => {
                crate::config::check_secret(secret)?;
                (
                    Algorithm::HS256,
                    Keys::List(vec![DecodingKey::from_secret(secret)]),
                )
            }
            KeyConfig::Rs256 { public_keys_pem } => (
                Algorithm::RS256,
                Keys::List(pem_keys(public_keys_pem, PublicKeyAlgorithm::Rs256)?),
            ),
            KeyConfig::Es256 { public_keys_pem } => (
                Algorithm::ES256,
                Keys::List(pem_keys(public_keys_pem, PublicKeyAlgorithm::Es256)?),
            ),
            KeyConfig::Jwks {
                algorithm,
                document_json,
            } => (
                jose(*algorithm),
                Keys::ByKid(jwks_keys(document_json, *algorithm)?),
            ),
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.validate_aud = true;
                required.push("aud");
            }
            // No audience configured: `aud` is not checked (documented on
            // `AuthConfig::audience`).
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        Ok(Self {
            algorithm,
            keys,
            validation,
        })
    }

    /// Verifies `token` and returns the identity it carries.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        let header = peek_header(token)?;
        if header.alg != jose_name(self.algorithm) {
            return Err(AuthError::Invalid(format!(
                "token algorithm {} is not the configured {}",
                shown_alg(&header.alg),
                jose_name(self.algorithm)
            )));
        }

        let keys: Vec<&DecodingKey> = match &self.keys {
            Keys::List(keys) => keys.iter().collect(),
            Keys::ByKid(by_kid) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| invalid("token has no kid header"))?;
                vec![by_kid.get(kid).ok_or_else(|| invalid("unknown kid"))?]
            }
        };

        let mut last = invalid("bad signature");
        for key in keys {
            match jsonwebtoken::decode::<RawClaims>(token, key, &self.validation) {
                Ok(data) => return identity(data.claims),
                // Signed with another key: try the next one.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    last = map_error(&e);
                }
                // The signature matched (or the token is malformed): the
                // verdict does not depend on the key.
                Err(e) => return Err(map_error(&e)),
            }
        }
        Err(last)
    }
}

#[async_trait]
impl TokenVerifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        JwtVerifier::verify(self, token)
    }
}

/// The claims read after jsonwebtoken has checked the signature and the
/// time/issuer/audience claims. Loose types, so that a malformed `sub` is
/// reported as such instead of as an unreadable payload.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    topics: Option<serde_json::Value>,
    #[serde(default)]
    subscribe: Option<serde_json::Value>,
    #[serde(default)]
    topic: Option<serde_json::Value>,
}

/// A claim that must be a list of strings when present (the edge node
/// validates each entry, and answers a bad one with an error frame).
fn string_list(claim: Option<serde_json::Value>, name: &str) -> Result<Vec<String>, AuthError> {
    match claim {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(AuthError::Invalid(format!(
                    "{name} claim is not a list of strings"
                ))),
            })
            .collect(),
        Some(_) => Err(AuthError::Invalid(format!(
            "{name} claim is not a list of strings"
        ))),
    }
}

fn identity(claims: RawClaims) -> Result<Identity, AuthError> {
    let sub = match claims.sub {
        None | Some(serde_json::Value::Null) => return Err(invalid("missing sub claim")),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(invalid("sub claim is not a string")),
    };
    let user_id = UserId::new(&sub)
        .map_err(|e| AuthError::Invalid(format!("sub claim is not a valid user id: {e}")))?;
    // jsonwebtoken has checked that exp is present and numeric.
    let expires_at = claims.exp.as_ref().and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    });
    let topic = match claims.topic {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(invalid("topic claim is not a string")),
    };
    Ok(Identity {
        user_id,
        expires_at,
        topics: string_list(claims.topics, "topics")?,
        subscribe: string_list(claims.subscribe, "subscribe")?,
        topic,
    })
}

#[derive(Deserialize)]
struct PeekedHeader {
    #[serde(default)]
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Reads the (unverified) header to pin the algorithm and pick the key.
fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "malformed token: expected three dot-separated parts",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| invalid("malformed token header: not base64url"))?;
    let header: PeekedHeader = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("malformed token header: not a JSON object"))?;
    if header.alg.is_empty() {
        return Err(invalid("token header has no alg"));
    }
    Ok(header)
}

/// The header's alg for an error message: shown when it looks like an
/// algorithm name, so a garbage header is not echoed back.
fn shown_alg(alg: &str) -> &str {
    if alg.len() <= 8 && alg.chars().all(|c| c.is_ascii_alphanumeric()) {
        alg
    } else {
        "(unsupported)"
    }
}

fn invalid(reason: &str) -> AuthError {
    AuthError::Invalid(reason.to_owned())
}

/// Maps jsonwebtoken's verdict to ours, with fixed reasons.
fn map_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => invalid("bad signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            invalid("algorithm not allowed")
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            let claim = match claim.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                "aud" => "aud",
                "nbf" => "nbf",
                _ => "required",
            };
            AuthError::Invalid(format!("missing {claim} claim"))
        }
        ErrorKind::InvalidIssuer => invalid("wrong issuer"),
        ErrorKind::InvalidAudience => invalid("wrong audience"),
        ErrorKind::InvalidSubject => invalid("wrong subject"),
        ErrorKind::InvalidToken => invalid("malformed token"),
        ErrorKind::Base64(_) => invalid("malformed token: not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => invalid("malformed token payload"),
        other => {
            // Key problems should have been caught by `JwtVerifier::new`.
            tracing::warn!(error = ?other, "unexpected JWT verification error");
            invalid("token could not be verified")
        }
    }
}

fn jose(alg: PublicKeyAlgorithm) -> Algorithm {
    match alg {
        PublicKeyAlgorithm::Rs256 => Algorithm::RS256,
        PublicKeyAlgorithm::Es256 => Algorithm::ES256,
    }
}

fn jose_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        // Never configured: the verifier only pins the three above.
        _ => "unsupported",
    }
}

fn pem_keys(pems: &[String], alg: PublicKeyAlgorithm) -> Result<Vec<DecodingKey>, ConfigError> {
    if pems.is_empty() {
        return Err(ConfigError::NoPublicKeys);
    }
    pems.iter()
        .enumerate()
        .map(|(i, pem)| {
            let bad = |reason: &str| ConfigError::BadPem {
                index: i + 1,
                algorithm: alg.as_str(),
                reason: reason.to_owned(),
            };
            if pem.contains("PRIVATE KEY") {
                // Refuse loudly: a private key in the verifier's config is
                // a leak waiting to happen, and not what was meant.
                return Err(bad("this is a private key; configure the public key"));
            }
            match alg {
                PublicKeyAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                PublicKeyAlgorithm::Es256 => DecodingKey::from_ec_pem(pem.as_bytes()),
            }
            .map_err(|e| bad(&pem_reason(&e)))
        })
        .collect()
}

fn pem_reason(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
        ErrorKind::InvalidKeyFormat => "wrong key type or not a public key".to_owned(),
        ErrorKind::InvalidRsaKey(_) => "not an RSA public key".to_owned(),
        ErrorKind::InvalidEcdsaKey => "not an EC public key".to_owned(),
        _ => "cannot parse the PEM block".to_owned(),
    }
}

/// Reads a JWK set, keeping the signing keys of `alg` that have a `kid`.
/// Keys of other types are skipped (a set often serves several algorithms);
/// a set with no usable key is an error.
fn jwks_keys(
    document: &str,
    alg: PublicKeyAlgorithm,
) -> Result<HashMap<String, DecodingKey>, ConfigError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_str(document).map_err(|e| {
        ConfigError::BadJwks(format!(
            "not a JSON object with a \"keys\" array (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;

    let mut keys = HashMap::new();
    let mut skipped = 0usize;
    for (i, raw) in set.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(raw) {
            Ok(jwk) => jwk,
            Err(_) => {
                tracing::warn!(index = i, "skipping an unreadable JWK");
                skipped += 1;
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::warn!(index = i, "skipping a JWK without kid");
            skipped += 1;
            continue;
        };
        if !jwk_fits(&jwk, alg) {
            tracing::debug!(index = i, kid = %kid, "skipping a JWK of another algorithm");
            skipped += 1;
            continue;
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| ConfigError::BadJwks(format!("key {kid:?} has unusable parameters")))?;
        if keys.insert(kid.clone(), key).is_some() {
            return Err(ConfigError::BadJwks(format!(
                "kid {kid:?} appears more than once"
            )));
        }
    }
    if keys.is_empty() {
        return Err(ConfigError::BadJwks(format!(
            "no {alg} signing key with a kid ({skipped} key(s) skipped)"
        )));
    }
    Ok(keys)
}

fn jwk_fits(jwk: &Jwk, alg: PublicKeyAlgorithm) -> bool {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    ) {
        return false;
    }
    let declared_ok = matches!(
        (jwk.common.key_algorithm, alg),
        (None, _)
            | (Some(KeyAlgorithm::RS256), PublicKeyAlgorithm::Rs256)
            | (Some(KeyAlgorithm::ES256), PublicKeyAlgorithm::Es256)
    );
    let type_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), PublicKeyAlgorithm::Rs256) => true,
        (AlgorithmParameters::EllipticCurve(p), PublicKeyAlgorithm::Es256) => {
            p.curve == EllipticCurve::P256
        }
        _ => false,
    };
    declared_ok && type_ok
}
