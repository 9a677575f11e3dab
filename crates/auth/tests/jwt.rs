//! JwtVerifier against real tokens signed with the test keys in
//! `tests/fixtures/` (HS256, RS256, ES256, JWK sets), and against the
//! attacks a verifier must refuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgepush_auth::{
    AuthConfig, Claims, ConfigError, JwtVerifier, KeyConfig, PublicKeyAlgorithm, mint_hs256,
};
use edgepush_core::{AuthError, TokenVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET: &[u8] = b"test-secret-0123456789abcdef";

const RSA_PRIVATE: &str = include_str!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa_public.pem");
const RSA2_PRIVATE: &str = include_str!("fixtures/rsa2_private.pem");
const RSA2_PUBLIC: &str = include_str!("fixtures/rsa2_public.pem");
const EC_PRIVATE: &str = include_str!("fixtures/ec_private.pem");
const EC_PUBLIC: &str = include_str!("fixtures/ec_public.pem");
const JWKS_RSA: &str = include_str!("fixtures/jwks_rsa.json");
const JWKS_EC: &str = include_str!("fixtures/jwks_ec.json");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn claims(sub: &str) -> Claims {
    let now = now();
    Claims {
        sub: sub.to_owned(),
        exp: now + 300,
        nbf: None,
        iss: None,
        aud: None,
        iat: now,
        topics: Vec::new(),
        subscribe: Vec::new(),
        topic: None,
    }
}

fn hs256_verifier() -> JwtVerifier {
    JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec())).expect("valid HS256 config")
}

fn rs256_verifier() -> JwtVerifier {
    JwtVerifier::new(AuthConfig::new(KeyConfig::Rs256 {
        public_keys_pem: vec![RSA_PUBLIC.to_owned()],
    }))
    .expect("valid RS256 config")
}

fn es256_verifier() -> JwtVerifier {
    JwtVerifier::new(AuthConfig::new(KeyConfig::Es256 {
        public_keys_pem: vec![EC_PUBLIC.to_owned()],
    }))
    .expect("valid ES256 config")
}

fn jwks_verifier(algorithm: PublicKeyAlgorithm, doc: &str) -> JwtVerifier {
    JwtVerifier::new(AuthConfig::new(KeyConfig::Jwks {
        algorithm,
        document_json: doc.to_owned(),
    }))
    .expect("valid JWKS config")
}

/// Signs any serialisable claims with any algorithm and optional kid.
fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &impl serde::Serialize,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing works")
}

fn rsa_key(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA private key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("EC private key")
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

fn assert_invalid(result: Result<edgepush_core::Identity, AuthError>, needle: &str) {
    match result {
        Err(AuthError::Invalid(reason)) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} should mention {needle:?}"
            )
        }
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

// ---- accepted tokens -------------------------------------------------------

#[test]
fn valid_hs256_token_is_accepted() {
    let c = claims("alice");
    let identity = hs256_verifier()
        .verify(&mint_hs256(SECRET, &c))
        .expect("valid token");
    assert_eq!(identity.user_id.as_str(), "alice");
    assert_eq!(identity.expires_at, Some(c.exp));
}

#[test]
fn topic_claims_are_read() {
    let c = Claims {
        topics: vec!["news".into(), "chat:room-1".into()],
        subscribe: vec!["chat:*".into()],
        ..claims("alice")
    };
    let identity = hs256_verifier()
        .verify(&mint_hs256(SECRET, &c))
        .expect("valid token");
    assert_eq!(identity.topics, ["news", "chat:room-1"]);
    assert_eq!(identity.subscribe, ["chat:*"]);
    assert_eq!(identity.topic, None);

    let sub = Claims::subscribe_token("alice", "chat:secret", Duration::from_secs(60));
    let identity = hs256_verifier()
        .verify(&mint_hs256(SECRET, &sub))
        .expect("valid subscribe token");
    assert_eq!(identity.topic.as_deref(), Some("chat:secret"));

    let now = now();
    for (bad, needle) in [
        (
            serde_json::json!({"sub": "a", "exp": now + 60, "topics": "news"}),
            "topics",
        ),
        (
            serde_json::json!({"sub": "a", "exp": now + 60, "topics": [1]}),
            "topics",
        ),
        (
            serde_json::json!({"sub": "a", "exp": now + 60, "subscribe": {"a": 1}}),
            "subscribe",
        ),
        (
            serde_json::json!({"sub": "a", "exp": now + 60, "topic": ["x"]}),
            "topic",
        ),
    ] {
        let token = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(SECRET),
            &bad,
        );
        assert_invalid(hs256_verifier().verify(&token), needle);
    }
}

#[test]
fn valid_rs256_token_is_accepted() {
    let token = sign(
        Algorithm::RS256,
        None,
        &rsa_key(RSA_PRIVATE),
        &claims("bob@example.com"),
    );
    let identity = rs256_verifier().verify(&token).expect("valid token");
    assert_eq!(identity.user_id.as_str(), "bob@example.com");
}

#[test]
fn valid_es256_token_is_accepted() {
    let token = sign(Algorithm::ES256, None, &ec_key(), &claims("carol"));
    let identity = es256_verifier().verify(&token).expect("valid token");
    assert_eq!(identity.user_id.as_str(), "carol");
}

#[test]
fn valid_jwks_tokens_are_accepted_by_kid() {
    let rsa = jwks_verifier(PublicKeyAlgorithm::Rs256, JWKS_RSA);
    let t1 = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa_key(RSA_PRIVATE),
        &claims("dave"),
    );
    let t2 = sign(
        Algorithm::RS256,
        Some("rsa-2"),
        &rsa_key(RSA2_PRIVATE),
        &claims("erin"),
    );
    assert_eq!(rsa.verify(&t1).expect("kid rsa-1").user_id.as_str(), "dave");
    assert_eq!(rsa.verify(&t2).expect("kid rsa-2").user_id.as_str(), "erin");

    let ec = jwks_verifier(PublicKeyAlgorithm::Es256, JWKS_EC);
    let t3 = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims("frank"));
    assert_eq!(ec.verify(&t3).expect("kid ec-1").user_id.as_str(), "frank");
}

#[test]
fn jwks_refuses_missing_unknown_and_mismatched_kid() {
    let rsa = jwks_verifier(PublicKeyAlgorithm::Rs256, JWKS_RSA);
    let no_kid = sign(
        Algorithm::RS256,
        None,
        &rsa_key(RSA_PRIVATE),
        &claims("dave"),
    );
    assert_invalid(rsa.verify(&no_kid), "no kid");
    let unknown = sign(
        Algorithm::RS256,
        Some("rsa-9"),
        &rsa_key(RSA_PRIVATE),
        &claims("dave"),
    );
    assert_invalid(rsa.verify(&unknown), "unknown kid");
    // Signed with key 2 but claiming key 1: the signature does not match.
    let swapped = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa_key(RSA2_PRIVATE),
        &claims("dave"),
    );
    assert_invalid(rsa.verify(&swapped), "signature");
}

#[test]
fn several_pem_keys_allow_rotation() {
    let verifier = JwtVerifier::new(AuthConfig::new(KeyConfig::Rs256 {
        public_keys_pem: vec![RSA_PUBLIC.to_owned(), RSA2_PUBLIC.to_owned()],
    }))
    .expect("two keys");
    for (private, user) in [
        (RSA_PRIVATE, "old-key-user"),
        (RSA2_PRIVATE, "new-key-user"),
    ] {
        let token = sign(Algorithm::RS256, None, &rsa_key(private), &claims(user));
        assert_eq!(
            verifier
                .verify(&token)
                .expect("either key")
                .user_id
                .as_str(),
            user
        );
    }
    // And an expired token signed by the second key is reported as expired,
    // not as a bad signature.
    let mut old = claims("u");
    old.exp = now() - 120;
    let token = sign(Algorithm::RS256, None, &rsa_key(RSA2_PRIVATE), &old);
    assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
}

#[tokio::test]
async fn token_verifier_trait_gives_the_same_verdict() {
    let verifier: Box<dyn TokenVerifier> = Box::new(hs256_verifier());
    let identity = verifier
        .verify(&mint_hs256(SECRET, &claims("gina")))
        .await
        .expect("valid");
    assert_eq!(identity.user_id.as_str(), "gina");
    assert_eq!(verifier.verify("").await, Err(AuthError::Missing));
}

// ---- time claims -----------------------------------------------------------

#[test]
fn expired_token_is_refused_as_expired() {
    let mut c = claims("alice");
    c.exp = now() - 3600;
    assert_eq!(
        hs256_verifier().verify(&mint_hs256(SECRET, &c)),
        Err(AuthError::Expired)
    );
}

#[test]
fn token_not_yet_valid_is_refused() {
    let mut c = claims("alice");
    c.nbf = Some(now() + 600);
    assert_eq!(
        hs256_verifier().verify(&mint_hs256(SECRET, &c)),
        Err(AuthError::NotYetValid)
    );
    // nbf in the past is fine.
    c.nbf = Some(now() - 10);
    assert!(hs256_verifier().verify(&mint_hs256(SECRET, &c)).is_ok());
}

#[test]
fn leeway_is_honoured() {
    let verifier =
        JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec()).with_leeway(Duration::from_secs(5)))
            .expect("config");
    let mut c = claims("alice");
    c.exp = now() - 2;
    assert!(
        verifier.verify(&mint_hs256(SECRET, &c)).is_ok(),
        "expired 2s ago is within the 5s leeway"
    );
    c.exp = now() - 60;
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &c)),
        Err(AuthError::Expired)
    );

    // The same leeway applies to nbf.
    let mut c = claims("alice");
    c.nbf = Some(now() + 2);
    assert!(verifier.verify(&mint_hs256(SECRET, &c)).is_ok());
    c.nbf = Some(now() + 60);
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &c)),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn missing_exp_is_refused() {
    let payload = serde_json::json!({"sub": "alice", "iat": now()});
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        &payload,
    );
    assert_invalid(hs256_verifier().verify(&token), "missing exp");
}

// ---- signatures and algorithms --------------------------------------------

#[test]
fn wrong_signature_is_refused() {
    let token = mint_hs256(SECRET, &claims("alice"));
    // Swap in the signature of another token: well-formed, but not this
    // payload's signature.
    let other = mint_hs256(SECRET, &claims("mallory"));
    let (head, _) = token.rsplit_once('.').expect("three parts");
    let (_, other_sig) = other.rsplit_once('.').expect("three parts");
    assert_invalid(
        hs256_verifier().verify(&format!("{head}.{other_sig}")),
        "signature",
    );

    // A payload edited after signing.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&serde_json::json!({"sub": "admin", "exp": now() + 300, "iat": now()}));
    assert_invalid(
        hs256_verifier().verify(&format!("{}.{}.{}", parts[0], forged, parts[2])),
        "signature",
    );

    // RS256 signed by a key that is not configured.
    let token = sign(
        Algorithm::RS256,
        None,
        &rsa_key(RSA2_PRIVATE),
        &claims("alice"),
    );
    assert_invalid(rs256_verifier().verify(&token), "signature");
}

#[test]
fn wrong_secret_is_refused() {
    let token = mint_hs256(b"another-secret-0123456789", &claims("alice"));
    assert_invalid(hs256_verifier().verify(&token), "signature");
}

#[test]
fn alg_none_is_refused() {
    let header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
    let payload = b64(&serde_json::json!({"sub": "alice", "exp": now() + 300}));
    let token = format!("{header}.{payload}.");
    for verifier in [hs256_verifier(), rs256_verifier(), es256_verifier()] {
        assert_invalid(verifier.verify(&token), "not the configured");
    }
    // Also with the capitalised spelling some libraries accepted.
    let header = b64(&serde_json::json!({"alg": "None"}));
    assert_invalid(
        hs256_verifier().verify(&format!("{header}.{payload}.")),
        "algorithm",
    );
}

#[test]
fn hs256_token_signed_with_the_public_key_is_refused_by_rs256() {
    // The classic confusion attack: HMAC over the token with the RSA public
    // key (which the attacker knows) as the secret.
    let token = mint_hs256(RSA_PUBLIC.as_bytes(), &claims("alice"));
    assert_invalid(
        rs256_verifier().verify(&token),
        "HS256 is not the configured RS256",
    );
}

#[test]
fn other_algorithm_mixes_are_refused() {
    let rs = sign(
        Algorithm::RS256,
        None,
        &rsa_key(RSA_PRIVATE),
        &claims("alice"),
    );
    let es = sign(Algorithm::ES256, None, &ec_key(), &claims("alice"));
    assert_invalid(es256_verifier().verify(&rs), "not the configured");
    assert_invalid(rs256_verifier().verify(&es), "not the configured");
    assert_invalid(hs256_verifier().verify(&rs), "not the configured");
    // RS512 with the right key is still not RS256.
    let rs512 = sign(
        Algorithm::RS512,
        None,
        &rsa_key(RSA_PRIVATE),
        &claims("alice"),
    );
    assert_invalid(rs256_verifier().verify(&rs512), "RS512");
    // A JWK set pinned to ES256 refuses RS256 even when the kid exists in
    // another set.
    let ec = jwks_verifier(PublicKeyAlgorithm::Es256, JWKS_EC);
    let rs_kid = sign(
        Algorithm::RS256,
        Some("ec-1"),
        &rsa_key(RSA_PRIVATE),
        &claims("a"),
    );
    assert_invalid(ec.verify(&rs_kid), "not the configured");
}

// ---- issuer and audience ---------------------------------------------------

fn strict_verifier() -> JwtVerifier {
    JwtVerifier::new(
        AuthConfig::hs256(SECRET.to_vec())
            .with_issuer("https://issuer.example")
            .with_audience("edgepush"),
    )
    .expect("config")
}

fn strict_claims() -> Claims {
    let mut c = claims("alice");
    c.iss = Some("https://issuer.example".into());
    c.aud = Some("edgepush".into());
    c
}

#[test]
fn right_issuer_and_audience_are_accepted() {
    assert!(
        strict_verifier()
            .verify(&mint_hs256(SECRET, &strict_claims()))
            .is_ok()
    );
    // aud as a list holding ours.
    let mut payload = serde_json::to_value(strict_claims()).expect("json");
    payload["aud"] = serde_json::json!(["other", "edgepush"]);
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        &payload,
    );
    assert!(strict_verifier().verify(&token).is_ok());
}

#[test]
fn wrong_issuer_is_refused() {
    let mut c = strict_claims();
    c.iss = Some("https://evil.example".into());
    assert_invalid(
        strict_verifier().verify(&mint_hs256(SECRET, &c)),
        "wrong issuer",
    );
    c.iss = None;
    assert_invalid(
        strict_verifier().verify(&mint_hs256(SECRET, &c)),
        "missing iss",
    );
}

#[test]
fn wrong_audience_is_refused() {
    let mut c = strict_claims();
    c.aud = Some("billing".into());
    assert_invalid(
        strict_verifier().verify(&mint_hs256(SECRET, &c)),
        "wrong audience",
    );
    c.aud = None;
    assert_invalid(
        strict_verifier().verify(&mint_hs256(SECRET, &c)),
        "missing aud",
    );
}

// ---- subject ---------------------------------------------------------------

#[test]
fn missing_sub_is_refused() {
    let payload = serde_json::json!({"exp": now() + 300, "iat": now()});
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        &payload,
    );
    assert_invalid(hs256_verifier().verify(&token), "missing sub");
    let payload = serde_json::json!({"sub": 42, "exp": now() + 300});
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        &payload,
    );
    assert_invalid(hs256_verifier().verify(&token), "not a string");
}

#[test]
fn sub_with_bad_characters_is_refused() {
    for sub in ["alice{x}", "a b", "alice/../bob", "", &"x".repeat(129)] {
        let token = mint_hs256(SECRET, &claims(sub));
        assert_invalid(hs256_verifier().verify(&token), "not a valid user id");
    }
}

// ---- garbage ---------------------------------------------------------------

#[test]
fn garbage_and_empty_tokens_are_refused() {
    let v = hs256_verifier();
    assert_eq!(v.verify(""), Err(AuthError::Missing));
    assert_eq!(v.verify("   "), Err(AuthError::Missing));
    for garbage in [
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJIUzI1NiJ9",
        "!!!.###.$$$",
        "Bearer abc.def.ghi",
    ] {
        assert!(
            matches!(v.verify(garbage), Err(AuthError::Invalid(_))),
            "{garbage:?} must be invalid"
        );
    }
    assert_invalid(v.verify(&"a".repeat(20_000)), "too long");
}

#[test]
fn reasons_never_echo_the_token() {
    let v = hs256_verifier();
    let secret_marker = "SECRETPAYLOADMARKER";
    let header = b64(&serde_json::json!({"alg": secret_marker}));
    let token = format!("{header}.{secret_marker}.{secret_marker}");
    for t in [
        token.as_str(),
        secret_marker,
        &format!("{secret_marker}.x.y"),
    ] {
        match v.verify(t) {
            Err(AuthError::Invalid(reason)) => {
                assert!(
                    !reason.contains(secret_marker),
                    "reason {reason:?} echoes the token"
                )
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

// ---- construction ----------------------------------------------------------

#[test]
fn verifier_new_checks_keys() {
    assert!(matches!(
        JwtVerifier::new(AuthConfig::hs256(b"short".to_vec())),
        Err(ConfigError::SecretTooShort { len: 5, min: 16 })
    ));
    let bad_pem = JwtVerifier::new(AuthConfig::new(KeyConfig::Rs256 {
        public_keys_pem: vec![
            "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n".into(),
        ],
    }));
    assert!(
        matches!(bad_pem, Err(ConfigError::BadPem { index: 1, .. })),
        "{bad_pem:?}"
    );
    // An EC key where RSA is configured.
    let wrong_type = JwtVerifier::new(AuthConfig::new(KeyConfig::Rs256 {
        public_keys_pem: vec![RSA_PUBLIC.into(), EC_PUBLIC.into()],
    }));
    assert!(
        matches!(wrong_type, Err(ConfigError::BadPem { index: 2, .. })),
        "{wrong_type:?}"
    );
    // A private key where a public one belongs.
    let private = JwtVerifier::new(AuthConfig::new(KeyConfig::Es256 {
        public_keys_pem: vec![EC_PRIVATE.into()],
    }));
    assert!(
        matches!(private, Err(ConfigError::BadPem { .. })),
        "{private:?}"
    );
    // No keys at all.
    assert!(matches!(
        JwtVerifier::new(AuthConfig::new(KeyConfig::Es256 {
            public_keys_pem: vec![]
        })),
        Err(ConfigError::NoPublicKeys)
    ));
    // A JWK set with only keys of the other algorithm.
    let jwks = JwtVerifier::new(AuthConfig::new(KeyConfig::Jwks {
        algorithm: PublicKeyAlgorithm::Es256,
        document_json: JWKS_RSA.into(),
    }));
    assert!(matches!(jwks, Err(ConfigError::BadJwks(_))), "{jwks:?}");
    let jwks = JwtVerifier::new(AuthConfig::new(KeyConfig::Jwks {
        algorithm: PublicKeyAlgorithm::Rs256,
        document_json: "{not json".into(),
    }));
    assert!(matches!(jwks, Err(ConfigError::BadJwks(_))), "{jwks:?}");
}

#[test]
fn verifier_debug_hides_the_secret() {
    let shown = format!("{:?}", hs256_verifier());
    assert!(!shown.contains("test-secret"), "{shown}");
    assert!(shown.contains("HS256"), "{shown}");
}
