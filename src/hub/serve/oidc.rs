//! Trusted Publishers for the offline Hub: `POST /oauth/token` exchanges a CI's OIDC id token
//! (RFC 8693) for a short-lived token that can write one repo. The id token must be signed by a
//! key of a trusted issuer's JWKS, name this Hub as its audience, be unexpired, and carry a
//! subject mapped to the requested repo.

use crate::repo_id::RepoId;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub jwks: JwkSet,
}

impl TrustedIssuer {
    /// `ISSUER_URL=JWKS_FILE`, e.g. `https://token.actions.githubusercontent.com=github-jwks.json`.
    pub fn parse(spec: &str) -> Result<TrustedIssuer, String> {
        let (issuer, file) = spec
            .split_once('=')
            .filter(|(i, f)| !i.is_empty() && !f.is_empty())
            .ok_or_else(|| format!("--trust-issuer expects ISSUER_URL=JWKS_FILE, got {spec:?}"))?;
        url::Url::parse(issuer).map_err(|e| format!("--trust-issuer: {issuer:?} is not a URL ({e})"))?;
        TrustedIssuer::from_file(issuer, Path::new(file))
    }

    pub fn from_file(issuer: &str, file: &Path) -> Result<TrustedIssuer, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("--trust-issuer: cannot read {}: {e}", file.display()))?;
        let jwks: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("--trust-issuer: {} is not a JWKS document ({{\"keys\": [...]}}): {e}", file.display()))?;
        if jwks.keys.is_empty() {
            return Err(format!("--trust-issuer: {} has no keys", file.display()));
        }
        if let Some(k) = jwks.keys.iter().find(|k| matches!(k.algorithm, AlgorithmParameters::OctetKey(_))) {
            return Err(format!(
                "--trust-issuer: {} holds a symmetric key (kid {:?}); only public keys (RSA, EC, OKP) can be trusted",
                file.display(),
                k.common.key_id
            ));
        }
        Ok(TrustedIssuer { issuer: issuer.trim_end_matches('/').to_string(), jwks })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedSubject {
    pub subject: String,
    pub repo: RepoId,
}

impl TrustedSubject {
    /// `SUBJECT=namespace/name`; the subject may itself contain `=`, so the last one splits.
    pub fn parse(spec: &str) -> Result<TrustedSubject, String> {
        let (subject, repo) = spec
            .rsplit_once('=')
            .filter(|(s, _)| !s.is_empty())
            .ok_or_else(|| format!("--trust-subject expects SUBJECT=namespace/name, got {spec:?}"))?;
        let repo = RepoId::parse(repo).map_err(|e| format!("--trust-subject {spec:?}: {e}"))?;
        Ok(TrustedSubject { subject: subject.to_string(), repo })
    }
}

#[derive(Debug, Clone)]
pub struct OidcTrust {
    pub issuers: Vec<TrustedIssuer>,
    pub subjects: Vec<TrustedSubject>,
    /// The `aud` id tokens must carry; `None` = this Hub's own URL as the client reached it.
    pub audience: Option<String>,
    pub token_ttl: Duration,
}

/// What an exchanged token may do.
#[derive(Debug, Clone)]
pub struct Grant {
    pub repo: RepoId,
    pub subject: String,
    pub expires_at: Instant,
}

/// Why an exchange was refused: an OAuth error code (RFC 6749 §5.2) and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

fn refuse(status: u16, error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal { status, error, description: description.into() }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

#[derive(serde::Deserialize)]
struct UnverifiedClaims {
    #[serde(default)]
    iss: Option<String>,
}

impl OidcTrust {
    /// Checks an id token for `resource`, as seen by a client that reached this Hub at `own_url`.
    pub fn verify(&self, id_token: &str, resource: &RepoId, own_url: &str) -> Result<Grant, Refusal> {
        let header =
            jsonwebtoken::decode_header(id_token).map_err(|e| refuse(400, "invalid_request", format!("subject_token is not a JWT ({e})")))?;
        if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(refuse(400, "invalid_grant", format!("id tokens signed with {:?} (a shared secret) are not accepted", header.alg)));
        }
        // The issuer picks the key set; it is only trusted once the signature checks out below.
        let claimed: UnverifiedClaims = jsonwebtoken::dangerous::insecure_decode_claims(id_token)
            .map_err(|e| refuse(400, "invalid_request", format!("subject_token has no readable claims ({e})")))?;
        let iss = claimed.iss.unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss.trim_end_matches('/'))
            .ok_or_else(|| refuse(400, "invalid_grant", format!("the id token's issuer {iss:?} is not trusted by this Hub")))?;
        let jwk = match &header.kid {
            Some(kid) => issuer
                .jwks
                .find(kid)
                .ok_or_else(|| refuse(400, "invalid_grant", format!("no key with kid {kid:?} in the JWKS of {}", issuer.issuer)))?,
            None if issuer.jwks.keys.len() == 1 => &issuer.jwks.keys[0],
            None => return Err(refuse(400, "invalid_grant", "the id token names no key (kid) and its issuer has several")),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| refuse(400, "invalid_grant", format!("unusable key in the issuer's JWKS: {e}")))?;
        let audience = self.audience.clone().unwrap_or_else(|| own_url.to_string());
        let mut v = Validation::new(header.alg);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_issuer(&[issuer.issuer.as_str(), &format!("{}/", issuer.issuer)]);
        v.set_audience(&[audience.as_str()]);
        v.validate_nbf = true;
        v.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(id_token, &key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => {
                refuse(400, "invalid_grant", "the id token's signature does not verify with the issuer's keys (forged or tampered)")
            }
            ErrorKind::ExpiredSignature => refuse(400, "invalid_grant", "the id token has expired: mint a fresh one"),
            ErrorKind::ImmatureSignature => refuse(400, "invalid_grant", "the id token is not valid yet (nbf in the future)"),
            ErrorKind::InvalidAudience => {
                refuse(400, "invalid_grant", format!("the id token's audience (aud) is not this Hub: it must be {audience:?}"))
            }
            ErrorKind::InvalidIssuer => refuse(400, "invalid_grant", format!("the id token's issuer {iss:?} is not trusted by this Hub")),
            ErrorKind::MissingRequiredClaim(c) => refuse(400, "invalid_grant", format!("the id token lacks the {c:?} claim")),
            ErrorKind::InvalidAlgorithm => refuse(400, "invalid_grant", format!("the id token's algorithm {:?} does not match its key", header.alg)),
            _ => refuse(400, "invalid_grant", format!("the id token was refused: {e}")),
        })?;
        let sub = data.claims.sub;
        if !self.subjects.iter().any(|s| s.subject == sub && &s.repo == resource) {
            return Err(refuse(
                403,
                "access_denied",
                format!("the subject {sub:?} is not a trusted publisher for {resource} (configure it with --trust-subject)"),
            ));
        }
        Ok(Grant { repo: resource.clone(), subject: sub, expires_at: Instant::now() + self.token_ttl })
    }
}

/// Exchanged tokens, kept in memory only: they are short-lived by design.
#[derive(Default)]
pub struct Grants(Mutex<HashMap<String, Grant>>);

pub enum Lookup {
    Valid(Grant),
    Expired(Grant),
    Unknown,
}

impl Grants {
    /// Issues a fresh secret for `grant`.
    pub fn issue(&self, grant: Grant) -> String {
        let secret: String =
            format!("hf_oidc_{}", rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric).take(40).map(char::from).collect::<String>());
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Expired grants stay a while so their use is reported as "expired", not "unknown".
        let horizon = Instant::now().checked_sub(Duration::from_secs(3600));
        g.retain(|_, v| horizon.is_none_or(|h| v.expires_at > h));
        g.insert(secret.clone(), grant);
        secret
    }

    pub fn lookup(&self, secret: &str) -> Lookup {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).get(secret) {
            Some(g) if g.expires_at > Instant::now() => Lookup::Valid(g.clone()),
            Some(g) => Lookup::Expired(g.clone()),
            None => Lookup::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const OWN: &str = "http://127.0.0.1:9999";
    const ISS: &str = "https://token.actions.example";

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc").join(name)
    }

    fn trust() -> OidcTrust {
        OidcTrust {
            issuers: vec![TrustedIssuer::from_file(ISS, &fixture("ci-jwks.json")).unwrap()],
            subjects: vec![TrustedSubject::parse("repo:org/project:ref:refs/heads/main=alice/sky-lora").unwrap()],
            audience: None,
            token_ttl: Duration::from_secs(60),
        }
    }

    fn mint(key: &str, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("ci-test-key".into());
        encode(&h, &claims, &EncodingKey::from_rsa_der(&std::fs::read(fixture(key)).unwrap())).unwrap()
    }

    fn claims(aud: &str, sub: &str, exp_in: i64) -> serde_json::Value {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        serde_json::json!({ "iss": ISS, "aud": aud, "sub": sub, "exp": now + exp_in, "iat": now, "nbf": now - 5 })
    }

    #[test]
    fn a_good_token_maps_to_its_repo_and_everything_else_is_refused() {
        let t = trust();
        let repo = RepoId::parse("alice/sky-lora").unwrap();
        let sub = "repo:org/project:ref:refs/heads/main";
        let g = t.verify(&mint("ci-key.der", claims(OWN, sub, 300)), &repo, OWN).unwrap();
        assert_eq!((g.repo.to_string().as_str(), g.subject.as_str()), ("alice/sky-lora", sub));

        let why = |jwt: String, repo: &RepoId| t.verify(&jwt, repo, OWN).unwrap_err().description;
        assert!(why(mint("attacker-key.der", claims(OWN, sub, 300)), &repo).contains("signature"));
        assert!(why(mint("ci-key.der", claims(OWN, sub, -600)), &repo).contains("expired"));
        assert!(why(mint("ci-key.der", claims("https://huggingface.co", sub, 300)), &repo).contains("audience"));
        assert!(why(mint("ci-key.der", claims(OWN, "repo:org/project:ref:refs/heads/dev", 300)), &repo).contains("not a trusted publisher"));
        let other = RepoId::parse("alice/other").unwrap();
        assert!(why(mint("ci-key.der", claims(OWN, sub, 300)), &other).contains("not a trusted publisher"));
        let mut c = claims(OWN, sub, 300);
        c["iss"] = "https://evil.example".into();
        assert!(why(mint("ci-key.der", c), &repo).contains("not trusted"));
        let mut c = claims(OWN, sub, 300);
        c.as_object_mut().unwrap().remove("sub");
        assert!(why(mint("ci-key.der", c), &repo).contains("sub"));
        assert!(why("not-a-jwt".into(), &repo).contains("not a JWT"));
        // A payload swapped after signing.
        let good = mint("ci-key.der", claims(OWN, sub, 300));
        let evil = mint("ci-key.der", claims(OWN, "repo:evil/x:ref:refs/heads/main", 300));
        let parts: Vec<&str> = good.split('.').collect();
        let evil_payload = evil.split('.').nth(1).unwrap();
        assert!(why(format!("{}.{}.{}", parts[0], evil_payload, parts[2]), &repo).contains("signature"));
    }

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let s = TrustedSubject::parse("repo:a/b:environment:prod=alice/x").unwrap();
        assert_eq!(s.subject, "repo:a/b:environment:prod");
        assert!(TrustedSubject::parse("repo:a/b").is_err());
        assert!(TrustedSubject::parse("repo:a/b=not a repo").is_err());
        assert!(TrustedIssuer::parse("no-equals").unwrap_err().contains("ISSUER_URL=JWKS_FILE"));
        assert!(TrustedIssuer::parse("https://x=/no/such/jwks.json").unwrap_err().contains("cannot read"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("oct.json");
        std::fs::write(&f, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#).unwrap();
        assert!(TrustedIssuer::from_file("https://x", &f).unwrap_err().contains("symmetric"));
    }

    #[test]
    fn grants_expire() {
        let grants = Grants::default();
        let repo = RepoId::parse("alice/x").unwrap();
        let live = grants.issue(Grant { repo: repo.clone(), subject: "s".into(), expires_at: Instant::now() + Duration::from_secs(60) });
        let dead = grants.issue(Grant { repo, subject: "s".into(), expires_at: Instant::now() });
        assert!(live.starts_with("hf_oidc_") && crate::token::Token::parse(&live).is_ok());
        assert!(matches!(grants.lookup(&live), Lookup::Valid(_)));
        assert!(matches!(grants.lookup(&dead), Lookup::Expired(_)));
        assert!(matches!(grants.lookup("hf_oidc_nope"), Lookup::Unknown));
    }
}
