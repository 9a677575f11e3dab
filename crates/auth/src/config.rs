//! Typed verifier configuration, parsed once at start-up.
//!
//! The algorithm is part of the configuration, never read from a token: a
//! deployment decides whether it trusts a shared secret (HS256) or public
//! keys (RS256/ES256, given as PEM blocks or as a JWK set), and a token that
//! claims any other algorithm is refused.
//!
//! [`AuthConfig::from_lookup`] reads the `EDGEPUSH_JWT_*` variables through a
//! lookup function, so binaries pass the resolved environment of the start-up
//! path (`edgepush-startup`) and tests
//! pass a map, without touching the process environment.

use std::fmt;
use std::time::Duration;

use edgepush_core::config::Vars;

/// Leeway applied to `exp` and `nbf` when none is configured: covers the
/// clock skew between the token issuer and the verifier.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// Largest leeway accepted: more than this hides a broken clock or lets
/// expired tokens live on.
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);

/// Shortest HS256 secret accepted, in bytes. Short secrets can be brute
/// forced offline from a single token.
pub const MIN_HS256_SECRET_LEN: usize = 16;

/// The variable naming the algorithm.
pub const ENV_ALG: &str = "EDGEPUSH_JWT_ALG";
/// The variable holding the HS256 secret.
pub const ENV_SECRET: &str = "EDGEPUSH_JWT_SECRET";
/// The variable holding one or more concatenated PEM public keys.
pub const ENV_PUBLIC_KEYS: &str = "EDGEPUSH_JWT_PUBLIC_KEYS";
/// The variable holding a JWK set as JSON text.
pub const ENV_JWKS: &str = "EDGEPUSH_JWT_JWKS";
/// The variable naming a file that holds a JWK set.
pub const ENV_JWKS_FILE: &str = "EDGEPUSH_JWT_JWKS_FILE";
/// The variable holding the required issuer.
pub const ENV_ISSUER: &str = "EDGEPUSH_JWT_ISSUER";
/// The variable holding the required audience.
pub const ENV_AUDIENCE: &str = "EDGEPUSH_JWT_AUDIENCE";
/// The variable holding the leeway in whole seconds.
pub const ENV_LEEWAY_SECS: &str = "EDGEPUSH_JWT_LEEWAY_SECS";

/// A public-key algorithm (the ones a JWK set can serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl PublicKeyAlgorithm {
    /// The JOSE name (`RS256`, `ES256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

impl fmt::Display for PublicKeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which algorithm tokens must use, and the keys that verify them.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyConfig {
    /// HMAC-SHA256 with a shared secret (dev mode, single-tenant setups).
    Hs256 {
        /// The shared secret, at least [`MIN_HS256_SECRET_LEN`] bytes.
        /// Never printed: `Debug` shows only its length.
        secret: Vec<u8>,
    },
    /// RSA signatures; a token verifies if any of the keys accepts it, so a
    /// new key can be added before the issuer switches to it (rotation).
    Rs256 {
        /// PEM public keys (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE`),
        /// one block per string.
        public_keys_pem: Vec<String>,
    },
    /// ECDSA P-256 signatures; several keys as for [`KeyConfig::Rs256`].
    Es256 {
        /// PEM public keys (`PUBLIC KEY` or `CERTIFICATE`), one per string.
        public_keys_pem: Vec<String>,
    },
    /// Keys from a JWK set; the token's `kid` header picks the key.
    Jwks {
        /// The algorithm every token must use; keys of another type are
        /// ignored.
        algorithm: PublicKeyAlgorithm,
        /// The JWK set document (`{"keys":[...]}`) as JSON text.
        document_json: String,
    },
}

impl KeyConfig {
    /// The JOSE name of the pinned algorithm.
    pub fn algorithm_name(&self) -> &'static str {
        match self {
            Self::Hs256 { .. } => "HS256",
            Self::Rs256 { .. } => "RS256",
            Self::Es256 { .. } => "ES256",
            Self::Jwks { algorithm, .. } => algorithm.as_str(),
        }
    }
}

impl fmt::Debug for KeyConfig {
    // By hand, so that a logged config never shows the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hs256 { secret } => f
                .debug_struct("Hs256")
                .field(
                    "secret",
                    &format_args!("<redacted, {} bytes>", secret.len()),
                )
                .finish(),
            Self::Rs256 { public_keys_pem } => f
                .debug_struct("Rs256")
                .field("public_keys", &public_keys_pem.len())
                .finish(),
            Self::Es256 { public_keys_pem } => f
                .debug_struct("Es256")
                .field("public_keys", &public_keys_pem.len())
                .finish(),
            Self::Jwks {
                algorithm,
                document_json,
            } => f
                .debug_struct("Jwks")
                .field("algorithm", algorithm)
                .field("document_bytes", &document_json.len())
                .finish(),
        }
    }
}

/// Everything a [`crate::JwtVerifier`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Pinned algorithm and keys.
    pub key: KeyConfig,
    /// When set, tokens must carry exactly this `iss`, so tokens minted by
    /// another issuer sharing the keys are refused.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud` (alone or in a list), so
    /// tokens minted for another service are refused. When unset, `aud` is
    /// not checked.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (whole seconds count).
    pub leeway: Duration,
}

impl AuthConfig {
    /// A config for `key`, without issuer or audience, with
    /// [`DEFAULT_LEEWAY`].
    pub fn new(key: KeyConfig) -> Self {
        Self {
            key,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// An HS256 config with `secret` (checked by [`crate::JwtVerifier::new`]).
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyConfig::Hs256 {
            secret: secret.into(),
        })
    }

    /// Requires `iss` to equal `issuer`.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to hold `audience`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the clock-skew leeway.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Reads the config from `EDGEPUSH_JWT_*` variables through `lookup`.
    ///
    /// Variables set to an empty (or blank) string count as unset. Exactly
    /// one key source must match the algorithm: `EDGEPUSH_JWT_SECRET` for
    /// HS256; one of `EDGEPUSH_JWT_PUBLIC_KEYS`, `EDGEPUSH_JWT_JWKS` or
    /// `EDGEPUSH_JWT_JWKS_FILE` for RS256/ES256. A key source of the wrong
    /// kind is an error rather than ignored, since it means the operator
    /// believes a different algorithm is in force.
    ///
    /// The PEM and JWKS contents are parsed by [`crate::JwtVerifier::new`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Untrimmed: the HS256 secret is used byte for byte.
        let vars = Vars::new(lookup);
        let get = |name: &str| vars.untrimmed(name);

        let alg = match get(ENV_ALG) {
            None => Alg::Hs256,
            Some(v) => match v.trim().to_ascii_uppercase().as_str() {
                "HS256" => Alg::Hs256,
                "RS256" => Alg::Rs256,
                "ES256" => Alg::Es256,
                _ => return Err(ConfigError::UnknownAlgorithm(printable(&v))),
            },
        };

        let secret = get(ENV_SECRET);
        let pems = get(ENV_PUBLIC_KEYS);
        let jwks = get(ENV_JWKS);
        let jwks_file = get(ENV_JWKS_FILE);

        let key = match alg {
            Alg::Hs256 => {
                for (var, value) in [
                    (ENV_PUBLIC_KEYS, &pems),
                    (ENV_JWKS, &jwks),
                    (ENV_JWKS_FILE, &jwks_file),
                ] {
                    if value.is_some() {
                        return Err(ConfigError::Conflict {
                            var,
                            algorithm: "HS256",
                        });
                    }
                }
                // The secret is used byte for byte: no trimming, so what the
                // issuer signs with is exactly what is verified with.
                let secret = secret.ok_or(ConfigError::MissingKey {
                    algorithm: "HS256",
                    expected: ENV_SECRET,
                })?;
                check_secret(secret.as_bytes())?;
                KeyConfig::Hs256 {
                    secret: secret.into_bytes(),
                }
            }
            Alg::Rs256 | Alg::Es256 => {
                let public = if alg == Alg::Rs256 {
                    PublicKeyAlgorithm::Rs256
                } else {
                    PublicKeyAlgorithm::Es256
                };
                if secret.is_some() {
                    return Err(ConfigError::Conflict {
                        var: ENV_SECRET,
                        algorithm: public.as_str(),
                    });
                }
                let sources = [pems.is_some(), jwks.is_some(), jwks_file.is_some()];
                if sources.iter().filter(|s| **s).count() > 1 {
                    return Err(ConfigError::SeveralKeySources);
                }
                if let Some(pems) = pems {
                    let public_keys_pem = split_pem_blocks(&pems)?;
                    match public {
                        PublicKeyAlgorithm::Rs256 => KeyConfig::Rs256 { public_keys_pem },
                        PublicKeyAlgorithm::Es256 => KeyConfig::Es256 { public_keys_pem },
                    }
                } else if let Some(document_json) = jwks {
                    KeyConfig::Jwks {
                        algorithm: public,
                        document_json,
                    }
                } else if let Some(path) = jwks_file {
                    let document_json = std::fs::read_to_string(path.trim()).map_err(|e| {
                        ConfigError::JwksFile {
                            path: path.trim().to_owned(),
                            reason: e.to_string(),
                        }
                    })?;
                    KeyConfig::Jwks {
                        algorithm: public,
                        document_json,
                    }
                } else {
                    return Err(ConfigError::MissingKey {
                        algorithm: public.as_str(),
                        expected: "EDGEPUSH_JWT_PUBLIC_KEYS, EDGEPUSH_JWT_JWKS or EDGEPUSH_JWT_JWKS_FILE",
                    });
                }
            }
        };

        let leeway = match get(ENV_LEEWAY_SECS) {
            None => DEFAULT_LEEWAY,
            Some(v) => {
                let secs: u64 = v
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::BadLeeway(printable(&v)))?;
                Duration::from_secs(secs)
            }
        };
        check_leeway(leeway)?;

        Ok(Self {
            key,
            issuer: get(ENV_ISSUER).map(|v| v.trim().to_owned()),
            audience: get(ENV_AUDIENCE).map(|v| v.trim().to_owned()),
            leeway,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

/// Why a configuration was refused. Messages name variables and problems,
/// never secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `EDGEPUSH_JWT_ALG` names an algorithm this verifier does not offer.
    #[error("EDGEPUSH_JWT_ALG is {0:?}; expected HS256, RS256 or ES256")]
    UnknownAlgorithm(String),
    /// The algorithm's key source is not set.
    #[error("{algorithm} needs a key: set {expected}")]
    MissingKey {
        /// The pinned algorithm.
        algorithm: &'static str,
        /// The variable(s) to set.
        expected: &'static str,
    },
    /// A key source of the wrong kind for the algorithm is set.
    #[error("{var} is set but EDGEPUSH_JWT_ALG is {algorithm}; unset it or change the algorithm")]
    Conflict {
        /// The variable that does not belong.
        var: &'static str,
        /// The pinned algorithm.
        algorithm: &'static str,
    },
    /// More than one public key source is set.
    #[error(
        "set only one of EDGEPUSH_JWT_PUBLIC_KEYS, EDGEPUSH_JWT_JWKS and EDGEPUSH_JWT_JWKS_FILE"
    )]
    SeveralKeySources,
    /// The HS256 secret is too short.
    #[error("the HS256 secret is {len} bytes; it must be at least {min} bytes")]
    SecretTooShort {
        /// The secret's length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// No public key was given.
    #[error("no public key configured")]
    NoPublicKeys,
    /// A PEM block could not be used as a public key of the algorithm.
    #[error(
        "public key #{index} (counting from 1) is not a usable {algorithm} PEM public key: {reason}"
    )]
    BadPem {
        /// Which block, counting from 1.
        index: usize,
        /// The pinned algorithm.
        algorithm: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWK set could not be read or holds no usable key.
    #[error("bad JWK set: {0}")]
    BadJwks(String),
    /// The JWK set file could not be read.
    #[error("cannot read the JWK set file {path}: {reason}")]
    JwksFile {
        /// The path from `EDGEPUSH_JWT_JWKS_FILE`.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// `EDGEPUSH_JWT_LEEWAY_SECS` is not a whole number of seconds.
    #[error("EDGEPUSH_JWT_LEEWAY_SECS is {0:?}; expected a whole number of seconds")]
    BadLeeway(String),
    /// The leeway is larger than [`MAX_LEEWAY`].
    #[error("the leeway is {secs}s; at most {max}s is accepted")]
    LeewayTooLarge {
        /// The configured leeway.
        secs: u64,
        /// The limit.
        max: u64,
    },
    /// The remote verifier's URL or HTTP client is unusable.
    #[error("remote verifier: {0}")]
    Remote(String),
}

/// At a component's start-up the verifier's own error becomes the one
/// configuration error of the workspace, naming the `EDGEPUSH_JWT_*` group.
impl From<ConfigError> for edgepush_core::config::ConfigError {
    fn from(error: ConfigError) -> Self {
        Self::invalid("EDGEPUSH_JWT_*", error)
    }
}

pub(crate) fn check_secret(secret: &[u8]) -> Result<(), ConfigError> {
    if secret.len() < MIN_HS256_SECRET_LEN {
        return Err(ConfigError::SecretTooShort {
            len: secret.len(),
            min: MIN_HS256_SECRET_LEN,
        });
    }
    Ok(())
}

pub(crate) fn check_leeway(leeway: Duration) -> Result<(), ConfigError> {
    if leeway > MAX_LEEWAY {
        return Err(ConfigError::LeewayTooLarge {
            secs: leeway.as_secs(),
            max: MAX_LEEWAY.as_secs(),
        });
    }
    Ok(())
}

/// Splits concatenated PEM text into one string per `-----BEGIN ...-----`
/// / `-----END ...-----` block. Text between blocks is ignored (comments).
pub fn split_pem_blocks(text: &str) -> Result<Vec<String>, ConfigError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let from_begin = &rest[start..];
        let Some(end_marker) = from_begin.find("-----END ") else {
            return Err(ConfigError::BadPem {
                index: blocks.len() + 1,
                algorithm: "PEM",
                reason: "BEGIN line without a matching END line".to_owned(),
            });
        };
        let after_end = &from_begin[end_marker + "-----END ".len()..];
        let Some(close) = after_end.find("-----") else {
            return Err(ConfigError::BadPem {
                index: blocks.len() + 1,
                algorithm: "PEM",
                reason: "unterminated END line".to_owned(),
            });
        };
        let block_len = end_marker + "-----END ".len() + close + "-----".len();
        blocks.push(format!("{}\n", &from_begin[..block_len]));
        rest = &from_begin[block_len..];
    }
    if blocks.is_empty() {
        return Err(ConfigError::NoPublicKeys);
    }
    Ok(blocks)
}

/// A short, printable rendering of a (non-secret) config value for error
/// messages.
fn printable(v: &str) -> String {
    let v = v.trim();
    let mut out: String = v.chars().take(32).filter(|c| !c.is_control()).collect();
    if v.chars().count() > 32 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_split() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n\
                    -----BEGIN PUBLIC KEY-----\nBBB\n-----END PUBLIC KEY-----";
        let blocks = split_pem_blocks(text).expect("two blocks");
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].contains("AAA") && !blocks[0].contains("BBB"));
        assert!(blocks[1].starts_with("-----BEGIN") && blocks[1].contains("BBB"));
        assert_eq!(split_pem_blocks("nothing"), Err(ConfigError::NoPublicKeys));
        assert!(matches!(
            split_pem_blocks("-----BEGIN PUBLIC KEY-----\nAAA"),
            Err(ConfigError::BadPem { index: 1, .. })
        ));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let config = AuthConfig::hs256("super-secret-value-123");
        let shown = format!("{config:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn printable_truncates_and_strips_controls() {
        assert_eq!(printable(" RS512\n"), "RS512");
        assert_eq!(printable(&"x".repeat(40)).chars().count(), 33);
    }
}
