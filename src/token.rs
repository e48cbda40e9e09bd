//! A Hub access token as a type that cannot leak: no Display, a masked Debug, registered with
//! the redactor the moment it exists.

use crate::redact;

#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token contains whitespace or a line break; paste exactly the `hf_…` value from https://huggingface.co/settings/tokens")]
    Whitespace,
    #[error("the token contains characters a Hub token never has (only ASCII letters, digits, `_`, `-` and `.`)")]
    Charset,
    #[error("this is an organization API token (`api_org_…`); those are no longer accepted by the Hub: create a user access token at https://huggingface.co/settings/tokens")]
    OrgToken,
}

impl Token {
    /// Accepts a token as read from a source; surrounding whitespace (a trailing newline from a
    /// file or stdin) is trimmed, inner whitespace is refused.
    pub fn parse(raw: &str) -> Result<Token, TokenError> {
        let t = raw.trim_matches(|c| c == '\n' || c == '\r' || c == ' ' || c == '\t');
        // Register before validating: even a malformed token must never be echoed.
        redact::register_secret(t);
        if t.is_empty() {
            return Err(TokenError::Empty);
        }
        if t.chars().any(char::is_whitespace) {
            return Err(TokenError::Whitespace);
        }
        // `.` appears in the Hub's short-lived JWT-based tokens (`hf_jwt_…`) from OIDC exchanges.
        if !t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(TokenError::Charset);
        }
        if t.starts_with("api_org") {
            return Err(TokenError::OrgToken);
        }
        Ok(Token(t.to_string()))
    }

    /// The secret itself, for an Authorization header or a credential store only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hf_***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_validates() {
        assert_eq!(Token::parse("hf_abc123XYZ\n").unwrap().expose(), "hf_abc123XYZ");
        assert_eq!(Token::parse("  \n"), Err(TokenError::Empty));
        assert_eq!(Token::parse("hf_abc def"), Err(TokenError::Whitespace));
        assert_eq!(Token::parse("hf_abc\ndef"), Err(TokenError::Whitespace));
        assert_eq!(Token::parse("hf_é"), Err(TokenError::Charset));
        assert_eq!(Token::parse("api_org_abcdef"), Err(TokenError::OrgToken));
        assert_eq!(Token::parse("hf_jwt_eyJhbGci.eyJzdWIi.c2ln").unwrap().expose(), "hf_jwt_eyJhbGci.eyJzdWIi.c2ln");
        assert_eq!(Token::parse("hf_a/b"), Err(TokenError::Charset));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::parse("hf_debugneverprintsthis").unwrap();
        assert_eq!(format!("{t:?}"), "Token(hf_***)");
        assert!(!crate::redact::redact("x hf_debugneverprintsthis").contains("neverprints"));
    }
}
