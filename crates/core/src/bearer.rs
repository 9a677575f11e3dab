//! The one parser of `Authorization: Bearer <token>` values, shared by the
//! edge node, collect, the auth function and the connections function, so
//! that they all treat case and whitespace the same way.

/// The token of an `Authorization` header value with the `Bearer` scheme:
/// the scheme matched case-insensitively (RFC 9110), separated from the
/// token by spaces or tabs, surrounding whitespace ignored. `None` for
/// another scheme or an empty token. Never panics, whatever the bytes.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let split = value.find([' ', '\t'])?;
    let (scheme, rest) = value.split_at(split);
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("  BEARER\tabc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
        assert_eq!(bearer_token("abc"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn any_text_is_answered_without_panicking() {
        for value in [
            "Beärer abc",
            "ééééééé abc",
            "Bearer ä",
            "日本語のトークン",
            "\u{0}\u{7f} x",
        ] {
            let _ = bearer_token(value);
        }
        assert_eq!(bearer_token("Bearer ä"), Some("ä"));
        assert_eq!(bearer_token("Beärer abc"), None);
    }
}
