//! AWS Signature Version 4 for the push API, both halves: [`sign`] for
//! callers (dispatch) and [`verify`] for edge nodes.
//!
//! The push API speaks the AWS API Gateway Management API's dialect, so a
//! request signed by the real `aws-sdk-apigatewaymanagement` client (service
//! `execute-api`) must verify here, and a request signed here must look to an
//! edge node exactly like one from the SDK. Both halves therefore share one
//! canonicalisation that follows the signer the SDK uses (`aws-sigv4`):
//!
//! - canonical URI: the path *as sent* (already percent-encoded once by the
//!   client), with empty, `.` and `..` segments removed, then percent-encoded
//!   a second time (everything but `A-Z a-z 0-9 - . _ ~ /`): the SDK sends
//!   `/prod/@connections/abc%3D%3D` and signs `/prod/%40connections/abc%253D%253D`;
//! - canonical query: pairs form-decoded, re-encoded, sorted;
//! - canonical headers: the names listed in `SignedHeaders`, values trimmed,
//!   runs of spaces collapsed, repeated headers joined with `,`;
//! - payload hash: `x-amz-content-sha256` when sent (it must equal the
//!   body's SHA-256: `UNSIGNED-PAYLOAD` is refused), else the body's SHA-256.
//!
//! Only header-based signing is supported (no presigned query strings, no
//! session tokens, no SigV4a).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_smithy_runtime_api::client::identity::Identity;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The only signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name in the credential scope, as for API Gateway.
pub const SERVICE: &str = "execute-api";
/// How far the request's `x-amz-date` may be from the verifier's clock,
/// either way (AWS allows the same).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The `x-amz-date` header.
pub const X_AMZ_DATE: &str = "x-amz-date";
/// The `x-amz-content-sha256` header.
pub const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// Everything but the unreserved characters of RFC 3986 is encoded.
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, keeping `/` (the path's separators).
const ENCODE_SET_PATH: &AsciiSet = &ENCODE_SET.remove(b'/');

/// The internal credential dispatch signs push requests with.
#[derive(Clone, PartialEq, Eq)]
pub struct PushCredential {
    /// Names the credential in the `Authorization` header, so a verifier
    /// holding several (during a rotation) knows which secret to use.
    pub access_key_id: String,
    /// The shared secret; never logged or printed.
    pub secret_access_key: String,
    /// Part of the credential scope; signer and verifier must agree on it.
    pub region: String,
}

impl PushCredential {
    /// A credential from its three parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            region: region.into(),
        }
    }
}

impl fmt::Debug for PushCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushCredential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// The credentials a verifier accepts, by access key id: more than one while
/// a secret is being rotated.
#[derive(Clone, Default)]
pub struct CredentialSet {
    /// Access key id -> credential.
    by_key_id: HashMap<String, PushCredential>,
}

impl CredentialSet {
    /// A set of `creds`; a later credential replaces an earlier one with the
    /// same access key id.
    pub fn new(creds: impl IntoIterator<Item = PushCredential>) -> Self {
        Self {
            by_key_id: creds
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
        }
    }

    /// The credential named `access_key_id`, if the set holds it.
    pub fn get(&self, access_key_id: &str) -> Option<&PushCredential> {
        self.by_key_id.get(access_key_id)
    }

    /// How many credentials the set holds.
    pub fn len(&self) -> usize {
        self.by_key_id.len()
    }

    /// Whether the set holds no credential (then every request is refused).
    pub fn is_empty(&self) -> bool {
        self.by_key_id.is_empty()
    }
}

impl From<PushCredential> for CredentialSet {
    fn from(cred: PushCredential) -> Self {
        Self::new([cred])
    }
}

impl fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.by_key_id.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("CredentialSet")
            .field("access_key_ids", &ids)
            .finish()
    }
}

/// A request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The URI has no host and the headers no `host`: there is nothing to sign
    /// the destination with.
    #[error("request has no host to sign")]
    NoHost,
    /// The clock reads before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
    /// A signed value cannot be sent as a header (the access key id, the
    /// region or a header value holds forbidden characters).
    #[error("value cannot be used in a header: {0}")]
    BadHeaderValue(&'static str),
}

/// Why a request's signature was refused. The messages never hold the
/// secret nor the signature the verifier expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The request carries no `Authorization` header.
    #[error("missing Authorization header")]
    Missing,
    /// The `Authorization` header, `x-amz-date` or a signed header cannot be
    /// parsed.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// The access key id is not in the verifier's [`CredentialSet`].
    #[error("unknown access key id {0:?}")]
    UnknownKey(String),
    /// The credential scope names another service than `execute-api`.
    #[error("credential scope names service {0:?}, expected \"execute-api\"")]
    WrongService(String),
    /// The credential scope names another region than the credential's.
    #[error("credential scope names region {got:?}, expected {expected:?}")]
    WrongRegion {
        /// The region in the request.
        got: String,
        /// The region of the verifier's credential.
        expected: String,
    },
    /// `x-amz-date` is more than five minutes from the verifier's clock.
    #[error("request time is {skew_secs}s away from the server's clock (max 300s)")]
    Stale {
        /// The distance between the two clocks, in seconds.
        skew_secs: u64,
    },
    /// `host` is not among the signed headers, so the request could be
    /// replayed against another node.
    #[error("the host header is not signed")]
    HostNotSigned,
    /// `x-amz-content-sha256` does not match the body.
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHashMismatch,
    /// The signature does not match the request.
    #[error("signature does not match")]
    BadSignature,
}

/// Signs a request for the push API (service `execute-api`) with `cred` at
/// time `now`.
///
/// Adds `host` (from `uri`, when `headers` has none: send it as is),
/// `x-amz-date`, `x-amz-content-sha256` and `authorization` to `headers`.
/// Every header already in `headers` is signed except `authorization`,
/// `user-agent`, `x-amzn-trace-id` and `transfer-encoding`; headers the HTTP
/// client adds later (`content-length`, `accept`) are not.
pub fn sign(
    cred: &PushCredential,
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), SignError> {
    sign_for_service(cred, SERVICE, method, uri, headers, body, now)
}

/// [`sign`] with any service name (tests sign for a wrong one).
///
/// The signature is made by `aws-sigv4`, the signer of the AWS SDK itself;
/// [`verify`] checks it with the canonicalisation below, which the tests
/// hold to `aws-sigv4`'s byte for byte.
pub(crate) fn sign_for_service(
    cred: &PushCredential,
    service: &str,
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), SignError> {
    let mut settings = SigningSettings::default();
    // Sent, so that a node can check the body against it before hashing.
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    sign_with(cred, service, method, uri, headers, body, now, settings).map(|_| ())
}

/// Signs with `aws-sigv4` and `settings`; returns the signature. Tests call
/// it with the SDK's own settings to sign as the SDK does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_with(
    cred: &PushCredential,
    service: &str,
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
    settings: SigningSettings,
) -> Result<String, SignError> {
    now.duration_since(UNIX_EPOCH)
        .map_err(|_| SignError::Clock)?;
    if !headers.contains_key(HOST) {
        let host = host_for(uri).ok_or(SignError::NoHost)?;
        let value = HeaderValue::from_str(&host).map_err(|_| SignError::NoHost)?;
        headers.insert(HOST, value);
    }
    headers.remove(AUTHORIZATION);

    let identity: Identity = Credentials::new(
        cred.access_key_id.as_str(),
        cred.secret_access_key.as_str(),
        None,
        None,
        "edgepush-push-credential",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&cred.region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|_| SignError::BadHeaderValue("access key id or region"))?
        .into();
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let value = value
            .to_str()
            .map_err(|_| SignError::BadHeaderValue("header value is not UTF-8"))?;
        pairs.push((name.as_str(), value));
    }
    let target = uri.to_string();
    let signable = SignableRequest::new(
        method.as_str(),
        target,
        pairs.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|_| SignError::BadHeaderValue("request"))?;
    let (instructions, signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|_| SignError::BadHeaderValue("request"))?
        .into_parts();
    let mut added: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SignError::BadHeaderValue("signature header"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| SignError::BadHeaderValue("access key id or region"))?;
        added.push((name, value));
    }
    for (name, value) in added {
        headers.insert(name, value);
    }
    Ok(signature)
}

/// Checks everything of a request's signature that does not need its body:
/// the `Authorization` header's shape, the service, a known access key id
/// and its region, `x-amz-date` within the allowed skew, `host` signed.
///
/// The push API calls this before reading a body, so that an unsigned or
/// stale request is refused without buffering megabytes; [`verify`] repeats
/// these checks and then checks the signature itself.
pub fn check_headers(
    creds: &CredentialSet,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), VerifyError> {
    preflight(creds, headers, now).map(|_| ())
}

/// What [`preflight`] found.
struct Preflight<'h, 'c> {
    auth: Authorization<'h>,
    cred: &'c PushCredential,
    amz_date: &'h str,
}

fn preflight<'h, 'c>(
    creds: &'c CredentialSet,
    headers: &'h HeaderMap,
    now: SystemTime,
) -> Result<Preflight<'h, 'c>, VerifyError> {
    let mut auth_values = headers.get_all(AUTHORIZATION).iter();
    let auth = auth_values.next().ok_or(VerifyError::Missing)?;
    if auth_values.next().is_some() {
        return Err(VerifyError::Malformed("more than one Authorization header"));
    }
    let auth = auth
        .to_str()
        .map_err(|_| VerifyError::Malformed("Authorization is not ASCII"))?;
    let auth = parse_authorization(auth)?;

    if auth.scope.service != SERVICE {
        return Err(VerifyError::WrongService(auth.scope.service.to_owned()));
    }
    let cred = creds
        .get(auth.access_key_id)
        .ok_or_else(|| VerifyError::UnknownKey(auth.access_key_id.to_owned()))?;
    if auth.scope.region != cred.region {
        return Err(VerifyError::WrongRegion {
            got: auth.scope.region.to_owned(),
            expected: cred.region.clone(),
        });
    }

    let amz_date = single_header(headers, X_AMZ_DATE)?
        .ok_or(VerifyError::Malformed("missing x-amz-date header"))?;
    let request_secs =
        parse_amz_date(amz_date).ok_or(VerifyError::Malformed("x-amz-date is not a date"))?;
    if &amz_date[..8] != auth.scope.date {
        return Err(VerifyError::Malformed(
            "credential scope date differs from x-amz-date",
        ));
    }
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let skew_secs = now_secs.abs_diff(request_secs);
    if skew_secs > MAX_SKEW.as_secs() {
        return Err(VerifyError::Stale { skew_secs });
    }

    if !auth.signed_headers.contains(&"host") {
        return Err(VerifyError::HostNotSigned);
    }
    Ok(Preflight {
        auth,
        cred,
        amz_date,
    })
}

/// Verifies the SigV4 signature of a received request against `creds` at
/// time `now`.
///
/// `uri` is the request target as received (path and query, still
/// percent-encoded: do not decode or rewrite it first); `body` is the whole
/// body. A `host` header missing from `headers` (HTTP/2) is taken from the
/// URI's authority.
pub fn verify(
    creds: &CredentialSet,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), VerifyError> {
    let Preflight {
        auth,
        cred,
        amz_date,
    } = preflight(creds, headers, now)?;
    let body_hash = hex::encode(Sha256::digest(body));
    let payload_hash = match single_header(headers, X_AMZ_CONTENT_SHA256)? {
        Some(sent) if sent != body_hash => return Err(VerifyError::PayloadHashMismatch),
        _ => body_hash,
    };

    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let value = if headers.contains_key(*name) {
            joined_header_values(headers, name)
                .ok_or(VerifyError::Malformed("a signed header is not UTF-8"))?
        } else if *name == "host" {
            // HTTP/2 carries the host in the URI (`:authority`), not a header.
            uri.authority()
                .map(|a| a.as_str().to_owned())
                .ok_or(VerifyError::Malformed("a signed header is missing"))?
        } else {
            return Err(VerifyError::Malformed("a signed header is missing"));
        };
        push_header_line(&mut canonical_headers, name, &value);
    }
    let creq = canonical_request(
        method,
        uri.path(),
        uri.query(),
        &canonical_headers,
        auth.signed_headers_raw,
        &payload_hash,
    );
    let mac = signature_mac(&cred.secret_access_key, &auth.scope, amz_date, &creq);
    mac.verify_slice(&auth.signature).map_err(|_| {
        tracing::debug!(
            access_key_id = auth.access_key_id,
            canonical_request = %creq,
            "push API signature mismatch"
        );
        VerifyError::BadSignature
    })
}

/// The credential scope: `date/region/service/aws4_request`.
struct Scope<'a> {
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl Scope<'_> {
    fn as_string(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// A parsed `Authorization` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    scope: Scope<'a>,
    /// As sent, for the canonical request.
    signed_headers_raw: &'a str,
    /// Split on `;`: lower-case, sorted, unique.
    signed_headers: Vec<&'a str>,
    /// The 32 signature bytes.
    signature: Vec<u8>,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, VerifyError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(VerifyError::Malformed("algorithm is not AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part
            .trim()
            .split_once('=')
            .ok_or(VerifyError::Malformed("Authorization part without '='"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(VerifyError::Malformed("unknown Authorization part")),
        };
        if slot.replace(val).is_some() {
            return Err(VerifyError::Malformed("repeated Authorization part"));
        }
    }
    let credential = credential.ok_or(VerifyError::Malformed("no Credential"))?;
    let signed_headers_raw = signed.ok_or(VerifyError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(VerifyError::Malformed("no Signature"))?;

    // Credential=AKID/date/region/service/aws4_request
    let mut parts = credential.rsplitn(5, '/');
    let (Some(terminator), Some(service), Some(region), Some(date), Some(access_key_id)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(VerifyError::Malformed(
            "Credential is not key/date/region/service/aws4_request",
        ));
    };
    if terminator != "aws4_request"
        || access_key_id.is_empty()
        || region.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(VerifyError::Malformed(
            "Credential is not key/date/region/service/aws4_request",
        ));
    }

    let signed_headers: Vec<&str> = signed_headers_raw.split(';').collect();
    let well_formed = signed_headers.iter().all(|h| {
        !h.is_empty()
            && h.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
            })
    });
    if !well_formed || !signed_headers.windows(2).all(|w| w[0] < w[1]) {
        return Err(VerifyError::Malformed(
            "SignedHeaders is not a sorted list of lower-case names",
        ));
    }

    let signature = match hex::decode(signature) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => return Err(VerifyError::Malformed("Signature is not 64 hex digits")),
    };

    Ok(Authorization {
        access_key_id,
        scope: Scope {
            date,
            region,
            service,
        },
        signed_headers_raw,
        signed_headers,
        signature,
    })
}

/// The one value of header `name`, if present; more than one is malformed.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(VerifyError::Malformed("repeated x-amz-* header"));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| VerifyError::Malformed("x-amz-* header is not ASCII"))
}

/// Every value of header `name`, each trimmed, joined with `,`; `None` when a
/// value is not UTF-8. Empty when the header is absent.
fn joined_header_values(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out = String::new();
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&trim_all(std::str::from_utf8(value.as_bytes()).ok()?));
    }
    Some(out)
}

/// Trims spaces at both ends and collapses runs of spaces (spaces only, as
/// AWS does).
fn trim_all(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.trim_matches(' ').chars() {
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out
}

fn push_header_line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    out.push_str(value);
    out.push('\n');
}

/// The canonical request; `canonical_headers` ends with a newline per header.
fn canonical_request(
    method: &Method,
    path: &str,
    query: Option<&str>,
    canonical_headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.as_str(),
        canonical_uri(path),
        canonical_query(query.unwrap_or("")),
        canonical_headers,
        signed_headers,
        payload_hash,
    )
}

/// The path as sent, dot and empty segments removed, encoded once more.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = String::with_capacity(path.len() + 1);
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    let ends_with_slash = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|s| path.ends_with(s));
    if normalized.is_empty() || (ends_with_slash && !segments.is_empty()) {
        normalized.push('/');
    }
    utf8_percent_encode(&normalized, ENCODE_SET_PATH).to_string()
}

/// Query pairs form-decoded, re-encoded, sorted by key then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (encode_query_part(key), encode_query_part(value))
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Form-decodes (`+` is a space) and percent-encodes a query key or value.
fn encode_query_part(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    utf8_percent_encode(&decoded, ENCODE_SET).to_string()
}

/// An HMAC over the string to sign, keyed with the derived signing key.
fn signature_mac(secret: &str, scope: &Scope<'_>, amz_date: &str, creq: &str) -> HmacSha256 {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.as_string(),
        hex::encode(Sha256::digest(creq.as_bytes())),
    );
    let mut mac = new_mac(&k_signing);
    mac.update(string_to_sign.as_bytes());
    mac
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length: this arm cannot be reached.
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = new_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The `host` header for `uri`: the authority, without a default port.
fn host_for(uri: &Uri) -> Option<String> {
    let host = uri.host()?;
    let default_port = matches!(
        (uri.scheme_str(), uri.port_u16()),
        (Some("http"), Some(80)) | (Some("https"), Some(443))
    );
    match uri.port() {
        Some(_) if default_port => Some(host.to_owned()),
        Some(_) => uri.authority().map(|a| a.as_str().to_owned()),
        None => Some(host.to_owned()),
    }
}

/// The `x-amz-date` format.
const AMZ_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

/// `YYYYMMDDTHHMMSSZ` for `secs` since the Unix epoch.
#[cfg(test)]
fn format_amz_date(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| t.format(AMZ_DATE).ok())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch of a `YYYYMMDDTHHMMSSZ` date (a real
/// calendar date, from 1970 on).
fn parse_amz_date(s: &str) -> Option<u64> {
    // `time` also accepts fewer digits and a leap second: the header has
    // exactly sixteen ASCII characters.
    if s.len() != 16 || !s.is_ascii() {
        return None;
    }
    let t = time::PrimitiveDateTime::parse(s, AMZ_DATE).ok()?;
    u64::try_from(t.assume_utc().unix_timestamp()).ok()
}

#[cfg(test)]
mod tests;
