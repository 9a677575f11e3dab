//! Connection tokens, minted by the load generator itself (HS256).

use std::time::Duration;

use edgepush_auth::{Claims, mint_hs256};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// An edgepush client token for `user`, valid for `ttl`.
pub fn edgepush(secret: &[u8], user: &str, ttl: Duration) -> String {
    mint_hs256(secret, &Claims::new(user, ttl))
}

/// An edgepush connection token for `user` whose `topics` claim subscribes
/// the connection to `topics` at connect.
pub fn edgepush_with_topics(secret: &[u8], user: &str, topics: &[String], ttl: Duration) -> String {
    let mut claims = Claims::new(user, ttl);
    claims.topics = topics.to_vec();
    mint_hs256(secret, &claims)
}

/// Centrifugo's connection-token claims: `channels` subscribes the
/// connection on the server side, so no subscribe command is needed.
#[derive(Serialize)]
struct CentrifugoClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    channels: &'a [String],
}

/// A Centrifugo connection token for `user`, subscribed to `channels`.
pub fn centrifugo(secret: &[u8], user: &str, channels: &[String], ttl: Duration) -> String {
    let now = edgepush_auth::unix_now();
    let claims = CentrifugoClaims {
        sub: user,
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
        channels,
    };
    // HMAC over plain claims cannot fail; an empty string would only make
    // the server refuse the connection, which the generator counts.
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64_decode::decode_segment;

    mod base64_decode {
        /// The JSON of a token's claims segment (base64url, no padding).
        pub(super) fn decode_segment(token: &str) -> serde_json::Value {
            let seg = token.split('.').nth(1).unwrap_or_default();
            let mut bits = 0u32;
            let mut nbits = 0;
            let mut out = Vec::new();
            for c in seg.bytes() {
                let v = match c {
                    b'A'..=b'Z' => c - b'A',
                    b'a'..=b'z' => c - b'a' + 26,
                    b'0'..=b'9' => c - b'0' + 52,
                    b'-' => 62,
                    b'_' => 63,
                    _ => continue,
                };
                bits = (bits << 6) | u32::from(v);
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    out.push((bits >> nbits) as u8);
                }
            }
            serde_json::from_slice(&out).unwrap()
        }
    }

    #[test]
    fn centrifugo_tokens_carry_sub_and_channels() {
        let t = centrifugo(
            b"0123456789abcdef",
            "u7",
            &["bench".into()],
            Duration::from_secs(60),
        );
        let claims = decode_segment(&t);
        assert_eq!(claims["sub"], "u7");
        assert_eq!(claims["channels"][0], "bench");
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    }

    #[test]
    fn edgepush_tokens_name_the_user() {
        let t = edgepush(b"0123456789abcdef", "u1", Duration::from_secs(60));
        assert_eq!(decode_segment(&t)["sub"], "u1");
    }
}
