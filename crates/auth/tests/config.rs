//! AuthConfig::from_lookup with injected variables (never the process
//! environment), and the verifiers it leads to.

use std::collections::HashMap;
use std::time::Duration;

use edgepush_auth::{
    AuthConfig, Claims, ConfigError, JwtVerifier, KeyConfig, PublicKeyAlgorithm, mint_hs256,
};

const RSA_PUBLIC: &str = include_str!("fixtures/rsa_public.pem");
const RSA2_PUBLIC: &str = include_str!("fixtures/rsa2_public.pem");
const EC_PUBLIC: &str = include_str!("fixtures/ec_public.pem");
const JWKS_RSA: &str = include_str!("fixtures/jwks_rsa.json");

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn from(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
    AuthConfig::from_lookup(lookup(vars))
}

#[test]
fn hs256_is_the_default() {
    let config = from(&[("EDGEPUSH_JWT_SECRET", "0123456789abcdef")]).expect("valid");
    assert_eq!(
        config.key,
        KeyConfig::Hs256 {
            secret: b"0123456789abcdef".to_vec()
        }
    );
    assert_eq!(config.leeway, Duration::from_secs(5));
    assert_eq!(config.issuer, None);
    assert_eq!(config.audience, None);

    // The verifier built from it accepts tokens minted with the secret.
    let verifier = JwtVerifier::new(config).expect("valid");
    let token = mint_hs256(
        b"0123456789abcdef",
        &Claims::new("alice", Duration::from_secs(60)),
    );
    assert_eq!(
        verifier.verify(&token).expect("valid").user_id.as_str(),
        "alice"
    );
}

#[test]
fn all_options_are_read() {
    let config = from(&[
        ("EDGEPUSH_JWT_ALG", "rs256"),
        (
            "EDGEPUSH_JWT_PUBLIC_KEYS",
            &format!("{RSA_PUBLIC}{RSA2_PUBLIC}"),
        ),
        ("EDGEPUSH_JWT_ISSUER", " https://issuer.example "),
        ("EDGEPUSH_JWT_AUDIENCE", "edgepush"),
        ("EDGEPUSH_JWT_LEEWAY_SECS", "30"),
    ])
    .expect("valid");
    match &config.key {
        KeyConfig::Rs256 { public_keys_pem } => assert_eq!(public_keys_pem.len(), 2),
        other => panic!("expected RS256, got {other:?}"),
    }
    assert_eq!(config.issuer.as_deref(), Some("https://issuer.example"));
    assert_eq!(config.audience.as_deref(), Some("edgepush"));
    assert_eq!(config.leeway, Duration::from_secs(30));
    JwtVerifier::new(config).expect("both keys parse");
}

#[test]
fn es256_and_jwks_sources_are_read() {
    let config = from(&[
        ("EDGEPUSH_JWT_ALG", "ES256"),
        ("EDGEPUSH_JWT_PUBLIC_KEYS", EC_PUBLIC),
    ])
    .expect("valid");
    assert!(matches!(config.key, KeyConfig::Es256 { .. }));
    JwtVerifier::new(config).expect("EC key parses");

    let config = from(&[
        ("EDGEPUSH_JWT_ALG", "RS256"),
        ("EDGEPUSH_JWT_JWKS", JWKS_RSA),
    ])
    .expect("valid");
    assert!(matches!(
        config.key,
        KeyConfig::Jwks {
            algorithm: PublicKeyAlgorithm::Rs256,
            ..
        }
    ));
    JwtVerifier::new(config).expect("JWKS parses");

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks_rsa.json");
    let config = from(&[
        ("EDGEPUSH_JWT_ALG", "RS256"),
        ("EDGEPUSH_JWT_JWKS_FILE", path),
    ])
    .expect("valid");
    match &config.key {
        KeyConfig::Jwks { document_json, .. } => assert_eq!(document_json, JWKS_RSA),
        other => panic!("expected JWKS, got {other:?}"),
    }
}

#[test]
fn empty_values_count_as_unset() {
    let config = from(&[
        ("EDGEPUSH_JWT_ALG", ""),
        ("EDGEPUSH_JWT_SECRET", "0123456789abcdef"),
        ("EDGEPUSH_JWT_PUBLIC_KEYS", "  "),
        ("EDGEPUSH_JWT_ISSUER", ""),
    ])
    .expect("valid");
    assert!(matches!(config.key, KeyConfig::Hs256 { .. }));
    assert_eq!(config.issuer, None);
}

#[test]
fn short_secret_is_refused_without_echoing_it() {
    let err = from(&[("EDGEPUSH_JWT_SECRET", "hunter2")]).expect_err("too short");
    assert_eq!(err, ConfigError::SecretTooShort { len: 7, min: 16 });
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("16"), "{shown}");
}

#[test]
fn unknown_algorithm_is_refused() {
    for alg in ["none", "RS512", "HS384", "hs256x"] {
        let err = from(&[
            ("EDGEPUSH_JWT_ALG", alg),
            ("EDGEPUSH_JWT_SECRET", "0123456789abcdef"),
        ])
        .expect_err("unknown");
        assert!(
            matches!(err, ConfigError::UnknownAlgorithm(_)),
            "{alg}: {err:?}"
        );
        assert!(err.to_string().contains("HS256, RS256 or ES256"), "{err}");
    }
}

#[test]
fn bad_pem_is_refused() {
    let err = from(&[
        ("EDGEPUSH_JWT_ALG", "RS256"),
        ("EDGEPUSH_JWT_PUBLIC_KEYS", "not a pem"),
    ])
    .expect_err("no block");
    assert_eq!(err, ConfigError::NoPublicKeys);

    let err = from(&[
        ("EDGEPUSH_JWT_ALG", "RS256"),
        (
            "EDGEPUSH_JWT_PUBLIC_KEYS",
            "-----BEGIN PUBLIC KEY-----\nAAAA",
        ),
    ])
    .expect_err("unterminated");
    assert!(
        matches!(err, ConfigError::BadPem { index: 1, .. }),
        "{err:?}"
    );

    // Well-formed framing, broken content: caught when the verifier is built.
    let config = from(&[
        ("EDGEPUSH_JWT_ALG", "ES256"),
        (
            "EDGEPUSH_JWT_PUBLIC_KEYS",
            &format!("{EC_PUBLIC}-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        ),
    ])
    .expect("framing is fine");
    let err = JwtVerifier::new(config).expect_err("second key is broken");
    assert!(
        matches!(err, ConfigError::BadPem { index: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("#2"), "{err}");
}

#[test]
fn missing_and_conflicting_key_sources_are_refused() {
    assert!(matches!(
        from(&[]),
        Err(ConfigError::MissingKey {
            algorithm: "HS256",
            ..
        })
    ));
    assert!(matches!(
        from(&[("EDGEPUSH_JWT_ALG", "RS256")]),
        Err(ConfigError::MissingKey {
            algorithm: "RS256",
            ..
        })
    ));
    assert!(matches!(
        from(&[
            ("EDGEPUSH_JWT_ALG", "RS256"),
            ("EDGEPUSH_JWT_PUBLIC_KEYS", RSA_PUBLIC),
            ("EDGEPUSH_JWT_SECRET", "0123456789abcdef"),
        ]),
        Err(ConfigError::Conflict {
            var: "EDGEPUSH_JWT_SECRET",
            ..
        })
    ));
    assert!(matches!(
        from(&[
            ("EDGEPUSH_JWT_SECRET", "0123456789abcdef"),
            ("EDGEPUSH_JWT_PUBLIC_KEYS", RSA_PUBLIC),
        ]),
        Err(ConfigError::Conflict {
            var: "EDGEPUSH_JWT_PUBLIC_KEYS",
            algorithm: "HS256"
        })
    ));
    assert_eq!(
        from(&[
            ("EDGEPUSH_JWT_ALG", "RS256"),
            ("EDGEPUSH_JWT_PUBLIC_KEYS", RSA_PUBLIC),
            ("EDGEPUSH_JWT_JWKS", JWKS_RSA),
        ]),
        Err(ConfigError::SeveralKeySources)
    );
}

#[test]
fn jwks_file_errors_name_the_file() {
    let err = from(&[
        ("EDGEPUSH_JWT_ALG", "RS256"),
        ("EDGEPUSH_JWT_JWKS_FILE", "/nonexistent/edgepush/jwks.json"),
    ])
    .expect_err("no such file");
    assert!(matches!(err, ConfigError::JwksFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/edgepush/jwks.json"),
        "{err}"
    );
}

#[test]
fn bad_leeway_is_refused() {
    let base = ("EDGEPUSH_JWT_SECRET", "0123456789abcdef");
    assert!(matches!(
        from(&[base, ("EDGEPUSH_JWT_LEEWAY_SECS", "five")]),
        Err(ConfigError::BadLeeway(_))
    ));
    assert!(matches!(
        from(&[base, ("EDGEPUSH_JWT_LEEWAY_SECS", "-1")]),
        Err(ConfigError::BadLeeway(_))
    ));
    assert!(matches!(
        from(&[base, ("EDGEPUSH_JWT_LEEWAY_SECS", "86400")]),
        Err(ConfigError::LeewayTooLarge { .. })
    ));
}

#[test]
fn config_debug_never_shows_the_secret() {
    let config = from(&[("EDGEPUSH_JWT_SECRET", "my-very-secret-value")]).expect("valid");
    let shown = format!("{config:?}");
    assert!(!shown.contains("my-very-secret-value"), "{shown}");
    assert!(shown.contains("20 bytes"), "{shown}");
}
