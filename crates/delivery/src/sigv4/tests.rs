//! Unit tests of signing and verification. Signing is `aws-sigv4`'s, the
//! signer the AWS SDK for Rust uses; these tests hold verification's own
//! canonicalisation to it, with the SDK's settings and with ours.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{PayloadChecksumKind, SigningSettings};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn cred() -> PushCredential {
    PushCredential::new("AKIDPUSH", SECRET, "us-east-1")
}

fn creds() -> CredentialSet {
    CredentialSet::from(cred())
}

/// 2024-05-06T07:08:09Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_979_289)
}

/// A non-UTF-8 body, like the raw bytes the SDK posts to a connection.
fn binary_body() -> Vec<u8> {
    let mut body = vec![0u8, 159, 146, 150, 255, b'\n', b'{', 0x80];
    body.extend(b"payload");
    body
}

/// A request as the SDK builds it before signing: absolute URI, host header
/// (hyper adds one from the URI), content type.
fn sdk_like_request(path_and_query: &str, body: Vec<u8>) -> Request<Vec<u8>> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://127.0.0.1:9101{path_and_query}"))
        .header(HOST, "127.0.0.1:9101")
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .expect("valid request");
    req.headers_mut()
        .insert("amz-sdk-invocation-id", HeaderValue::from_static("inv-1"));
    req
}

/// Signs `req` in place with `aws-sigv4` and `settings`, as the SDK does.
fn aws_sign(
    req: &mut Request<Vec<u8>>,
    cred: &PushCredential,
    service: &str,
    time: SystemTime,
    settings: SigningSettings,
) -> String {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let body = req.body().clone();
    sign_with(
        cred,
        service,
        &method,
        &uri,
        req.headers_mut(),
        &body,
        time,
        settings,
    )
    .expect("aws-sigv4 signs")
}

/// What a server sees: the origin-form target (path and query only).
fn received(req: &Request<Vec<u8>>) -> Uri {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .expect("origin-form uri")
}

fn verify_req(
    req: &Request<Vec<u8>>,
    creds: &CredentialSet,
    now: SystemTime,
) -> Result<(), VerifyError> {
    verify(
        creds,
        req.method(),
        &received(req),
        req.headers(),
        req.body(),
        now,
    )
}

/// Signs with [`sign`] and returns the request as the server receives it.
fn our_signed(
    path: &str,
    body: &[u8],
    cred: &PushCredential,
    time: SystemTime,
) -> (Uri, HeaderMap) {
    let uri: Uri = format!("http://127.0.0.1:9101{path}").parse().expect("uri");
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    sign(cred, &Method::POST, &uri, &mut headers, body, time).expect("signs");
    let target = uri
        .path_and_query()
        .expect("path")
        .as_str()
        .parse()
        .expect("uri");
    (target, headers)
}

#[test]
fn sign_then_verify_round_trips() {
    let body = br#"{"items":[]}"#;
    let (uri, headers) = our_signed("/prod/@batch", body, &cred(), t0());
    assert_eq!(headers[HOST], "127.0.0.1:9101");
    assert!(headers.contains_key(X_AMZ_DATE));
    assert!(headers.contains_key(X_AMZ_CONTENT_SHA256));
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, body, t0()),
        Ok(())
    );
    // Within the allowed skew on either side.
    let later = t0() + Duration::from_secs(299);
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, body, later),
        Ok(())
    );
}

#[test]
fn sign_matches_aws_sigv4_exactly() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let mut theirs = sdk_like_request("/prod/@connections/abc%3D%3D?b=2&a=x+y%2Fz", binary_body());
    aws_sign(&mut theirs, &cred(), SERVICE, t0(), settings);

    let mut ours = sdk_like_request("/prod/@connections/abc%3D%3D?b=2&a=x+y%2Fz", binary_body());
    let uri = ours.uri().clone();
    let body = ours.body().clone();
    sign(
        &cred(),
        &Method::POST,
        &uri,
        ours.headers_mut(),
        &body,
        t0(),
    )
    .expect("signs");

    assert_eq!(
        ours.headers()[AUTHORIZATION],
        theirs.headers()[AUTHORIZATION]
    );
    assert_eq!(ours.headers()[X_AMZ_DATE], theirs.headers()[X_AMZ_DATE]);
    assert_eq!(
        ours.headers()[X_AMZ_CONTENT_SHA256],
        theirs.headers()[X_AMZ_CONTENT_SHA256]
    );
}

#[test]
fn sdk_signature_for_encoded_connection_id_verifies() {
    // The SDK's defaults: no x-amz-content-sha256 header, double-encoded path.
    let mut req = sdk_like_request("/prod/@connections/abc%3D%3D", binary_body());
    aws_sign(&mut req, &cred(), SERVICE, t0(), SigningSettings::default());
    assert!(!req.headers().contains_key(X_AMZ_CONTENT_SHA256));
    assert_eq!(verify_req(&req, &creds(), t0()), Ok(()));
}

#[test]
fn sdk_signature_with_query_and_odd_path_verifies() {
    for target in [
        "/prod/@connections/a%2Bb%3Ac%40d?z=1&a=x+y%2Fz&a=%41&empty",
        "/",
        "/prod//@batch/",
        "/prod/./x/../@batch",
        "/%E2%9C%93/@connections/x~y",
    ] {
        let mut req = sdk_like_request(target, b"{}".to_vec());
        aws_sign(&mut req, &cred(), SERVICE, t0(), SigningSettings::default());
        assert_eq!(verify_req(&req, &creds(), t0()), Ok(()), "target {target}");
    }
}

#[test]
fn repeated_and_padded_headers_verify() {
    let mut req = sdk_like_request("/prod/@batch", b"x".to_vec());
    req.headers_mut()
        .append("x-custom", HeaderValue::from_static("  a   b  "));
    req.headers_mut()
        .append("x-custom", HeaderValue::from_static("c"));
    aws_sign(&mut req, &cred(), SERVICE, t0(), SigningSettings::default());
    assert_eq!(verify_req(&req, &creds(), t0()), Ok(()));
}

#[test]
fn tampered_body_is_refused() {
    // With the payload hash header (our signer): the hash no longer matches.
    let (uri, headers) = our_signed("/prod/@batch", b"original", &cred(), t0());
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"tampered", t0()),
        Err(VerifyError::PayloadHashMismatch)
    );
    // Without it (the SDK): the signature no longer matches.
    let mut req = sdk_like_request("/prod/@connections/abc%3D%3D", binary_body());
    aws_sign(&mut req, &cred(), SERVICE, t0(), SigningSettings::default());
    req.body_mut().push(b'!');
    assert_eq!(
        verify_req(&req, &creds(), t0()),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn tampered_path_is_refused() {
    let mut req = sdk_like_request("/prod/@connections/abc%3D%3D", binary_body());
    aws_sign(&mut req, &cred(), SERVICE, t0(), SigningSettings::default());
    let other: Uri = "/prod/@connections/abd%3D%3D".parse().expect("uri");
    assert_eq!(
        verify(
            &creds(),
            req.method(),
            &other,
            req.headers(),
            req.body(),
            t0()
        ),
        Err(VerifyError::BadSignature)
    );
    // Decoding the id before verifying changes the canonical URI too.
    let decoded: Uri = "/prod/@connections/abc==".parse().expect("uri");
    assert_eq!(
        verify(
            &creds(),
            req.method(),
            &decoded,
            req.headers(),
            req.body(),
            t0()
        ),
        Err(VerifyError::BadSignature)
    );
    // So does the method.
    assert_eq!(
        verify(
            &creds(),
            &Method::DELETE,
            &received(&req),
            req.headers(),
            req.body(),
            t0()
        ),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn wrong_secret_is_refused_without_leaking() {
    let right = our_signed("/prod/@batch", b"body", &cred(), t0());
    let mut wrong_cred = cred();
    wrong_cred.secret_access_key = "not-the-secret".into();
    let (uri, headers) = our_signed("/prod/@batch", b"body", &wrong_cred, t0());
    let err = verify(&creds(), &Method::POST, &uri, &headers, b"body", t0()).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);

    let expected_sig = right.1[AUTHORIZATION]
        .to_str()
        .expect("ascii")
        .rsplit('=')
        .next()
        .expect("signature")
        .to_owned();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(SECRET));
        assert!(!text.contains(&expected_sig));
    }
}

#[test]
fn unknown_key_id_is_refused() {
    let stranger = PushCredential::new("AKIDOTHER", SECRET, "us-east-1");
    let (uri, headers) = our_signed("/prod/@batch", b"body", &stranger, t0());
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"body", t0()),
        Err(VerifyError::UnknownKey("AKIDOTHER".into()))
    );
}

#[test]
fn rotated_credentials_both_verify() {
    let old = PushCredential::new("AKIDOLD", "old-secret", "us-east-1");
    let set = CredentialSet::new([old.clone(), cred()]);
    assert_eq!(set.len(), 2);
    for c in [old, cred()] {
        let (uri, headers) = our_signed("/@batch", b"b", &c, t0());
        assert_eq!(
            verify(&set, &Method::POST, &uri, &headers, b"b", t0()),
            Ok(())
        );
    }
}

#[test]
fn wrong_service_is_refused() {
    let mut req = sdk_like_request("/prod/@batch", b"b".to_vec());
    aws_sign(
        &mut req,
        &cred(),
        "lambda",
        t0(),
        SigningSettings::default(),
    );
    assert_eq!(
        verify_req(&req, &creds(), t0()),
        Err(VerifyError::WrongService("lambda".into()))
    );
    let uri: Uri = "http://h/@batch".parse().expect("uri");
    let mut headers = HeaderMap::new();
    sign_for_service(&cred(), "s3", &Method::POST, &uri, &mut headers, b"", t0()).expect("signs");
    assert_eq!(
        verify(
            &creds(),
            &Method::POST,
            &"/@batch".parse().expect("uri"),
            &headers,
            b"",
            t0()
        ),
        Err(VerifyError::WrongService("s3".into()))
    );
}

#[test]
fn wrong_region_is_refused() {
    let eu = PushCredential::new("AKIDPUSH", SECRET, "eu-west-1");
    let (uri, headers) = our_signed("/@batch", b"b", &eu, t0());
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"b", t0()),
        Err(VerifyError::WrongRegion {
            got: "eu-west-1".into(),
            expected: "us-east-1".into()
        })
    );
}

#[test]
fn old_and_future_dates_are_stale() {
    let ten_min = Duration::from_secs(600);
    let (uri, headers) = our_signed("/@batch", b"b", &cred(), t0() - ten_min);
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"b", t0()),
        Err(VerifyError::Stale { skew_secs: 600 })
    );
    let (uri, headers) = our_signed("/@batch", b"b", &cred(), t0() + ten_min);
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"b", t0()),
        Err(VerifyError::Stale { skew_secs: 600 })
    );
    // The SDK's signature ages the same way.
    let mut req = sdk_like_request("/prod/@batch", b"b".to_vec());
    aws_sign(
        &mut req,
        &cred(),
        SERVICE,
        t0() - ten_min,
        SigningSettings::default(),
    );
    assert!(matches!(
        verify_req(&req, &creds(), t0()),
        Err(VerifyError::Stale { .. })
    ));
}

#[test]
fn missing_authorization_is_refused() {
    let (uri, mut headers) = our_signed("/@batch", b"b", &cred(), t0());
    headers.remove(AUTHORIZATION);
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"b", t0()),
        Err(VerifyError::Missing)
    );
}

#[test]
fn garbled_authorization_is_malformed() {
    let (uri, headers) = our_signed("/@batch", b"b", &cred(), t0());
    let good = headers[AUTHORIZATION].to_str().expect("ascii").to_owned();
    let garbage = [
        "garbage".to_owned(),
        "Bearer abc".to_owned(),
        "AWS4-HMAC-SHA256".to_owned(),
        "AWS4-HMAC-SHA256 Credential=AKIDPUSH/20240506/us-east-1/execute-api/aws4_request"
            .to_owned(),
        good.replace("Signature=", "Signature=zz"),
        good.replace("/aws4_request", "/aws5_request"),
        good.replace("Credential=AKIDPUSH/", "Credential="),
        good.replace("content-type;host", "host;content-type"),
        good.replace("SignedHeaders=", "SignedHeaders=Content-Type;"),
        format!("{good}, Signature=00"),
    ];
    for value in garbage {
        let mut h = headers.clone();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&value).expect("header value"),
        );
        let got = verify(&creds(), &Method::POST, &uri, &h, b"b", t0());
        assert!(
            matches!(got, Err(VerifyError::Malformed(_))),
            "{value}: {got:?}"
        );
    }

    let mut h = headers.clone();
    h.insert(X_AMZ_DATE, HeaderValue::from_static("yesterday"));
    assert!(matches!(
        verify(&creds(), &Method::POST, &uri, &h, b"b", t0()),
        Err(VerifyError::Malformed(_))
    ));
    let mut h = headers.clone();
    h.remove(X_AMZ_DATE);
    assert!(matches!(
        verify(&creds(), &Method::POST, &uri, &h, b"b", t0()),
        Err(VerifyError::Malformed(_))
    ));
    // A signed header that did not arrive.
    let mut h = headers;
    h.remove(CONTENT_TYPE);
    assert!(matches!(
        verify(&creds(), &Method::POST, &uri, &h, b"b", t0()),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn unsigned_host_is_refused() {
    let mut settings = SigningSettings::default();
    if let Some(excluded) = settings.excluded_headers.as_mut() {
        excluded.push("host".into());
    }
    let mut req = sdk_like_request("/prod/@batch", b"b".to_vec());
    aws_sign(&mut req, &cred(), SERVICE, t0(), settings);
    assert_eq!(
        verify_req(&req, &creds(), t0()),
        Err(VerifyError::HostNotSigned)
    );
}

#[test]
fn unsigned_payload_is_refused() {
    let (uri, mut headers) = our_signed("/@batch", b"b", &cred(), t0());
    headers.insert(
        X_AMZ_CONTENT_SHA256,
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    assert_eq!(
        verify(&creds(), &Method::POST, &uri, &headers, b"b", t0()),
        Err(VerifyError::PayloadHashMismatch)
    );
}

#[test]
fn credential_debug_redacts_the_secret() {
    let text = format!("{:?} {:?}", cred(), creds());
    assert!(!text.contains(SECRET));
    assert!(text.contains("AKIDPUSH"));
}

#[test]
fn sign_without_host_fails_cleanly() {
    let uri: Uri = "/@batch".parse().expect("uri");
    let mut headers = HeaderMap::new();
    assert!(matches!(
        sign(&cred(), &Method::POST, &uri, &mut headers, b"", t0()),
        Err(SignError::NoHost)
    ));
}

#[test]
fn host_drops_default_ports_only() {
    let host = |s: &str| host_for(&s.parse().expect("uri"));
    assert_eq!(host("http://h:80/x").as_deref(), Some("h"));
    assert_eq!(host("https://h:443/x").as_deref(), Some("h"));
    assert_eq!(host("http://h:443/x").as_deref(), Some("h:443"));
    assert_eq!(
        host("http://127.0.0.1:9101").as_deref(),
        Some("127.0.0.1:9101")
    );
    assert_eq!(host("http://h/x").as_deref(), Some("h"));
}

#[test]
fn amz_dates_format_and_parse() {
    assert_eq!(format_amz_date(0), "19700101T000000Z");
    assert_eq!(format_amz_date(1_714_979_289), "20240506T070809Z");
    assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
    for secs in [0, 951_782_400, 1_714_979_289, 4_102_444_799] {
        assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs));
    }
    for bad in [
        "20240230T000000Z",
        "20241301T000000Z",
        "2024-05-06T07:0",
        "20240506T250000Z",
        "2024050６T070809Z",
        "",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
    }
}
