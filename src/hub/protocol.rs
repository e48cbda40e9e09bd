//! Wire types of the Hub HTTP API, shared by the client and the offline Hub so both speak the
//! same protocol by construction (see shared/reference/hub-protocol.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WhoAmI {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fullname: Option<String>,
    #[serde(default)]
    pub orgs: Vec<Org>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Org {
    pub name: String,
    #[serde(rename = "roleInOrg", default, skip_serializing_if = "Option::is_none")]
    pub role_in_org: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AuthInfo {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(rename = "accessToken", default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<AccessToken>,
}

/// A user access token's role, as whoami-v2 names it (`auth.accessToken.role`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenRole {
    Read,
    Write,
    /// Legacy write tokens.
    Admin,
    /// Permissions per entity, in `accessToken.fineGrained` (also what an OIDC exchange gives).
    FineGrained,
    /// A role this client does not know, kept as sent (empty: none was sent, as for OAuth and
    /// app tokens).
    #[serde(untagged)]
    Other(String),
}

impl TokenRole {
    /// The Hub's name for the role.
    pub fn as_str(&self) -> &str {
        match self {
            TokenRole::Read => "read",
            TokenRole::Write => "write",
            TokenRole::Admin => "admin",
            TokenRole::FineGrained => "fineGrained",
            TokenRole::Other(s) => s,
        }
    }

    /// The role the Hub names `name`.
    pub fn from_name(name: &str) -> TokenRole {
        match name {
            "read" => TokenRole::Read,
            "write" => TokenRole::Write,
            "admin" => TokenRole::Admin,
            "fineGrained" => TokenRole::FineGrained,
            other => TokenRole::Other(other.to_string()),
        }
    }
}

impl Default for TokenRole {
    fn default() -> Self {
        TokenRole::Other(String::new())
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AccessToken {
    #[serde(rename = "displayName", default)]
    pub display_name: String,
    #[serde(default)]
    pub role: TokenRole,
    #[serde(rename = "fineGrained", default, skip_serializing_if = "Option::is_none")]
    pub fine_grained: Option<FineGrained>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FineGrained {
    #[serde(default)]
    pub global: Vec<String>,
    #[serde(default)]
    pub scoped: Vec<Scoped>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Scoped {
    pub entity: Entity,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Entity {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub name: String,
}

impl WhoAmI {
    pub fn role(&self) -> Option<&TokenRole> {
        self.auth.as_ref()?.access_token.as_ref().map(|t| &t.role)
    }

    pub fn token_name(&self) -> Option<&str> {
        self.auth.as_ref()?.access_token.as_ref().map(|t| t.display_name.as_str())
    }

    /// Namespaces this token may push to, as far as whoami can tell. `None` = unknown
    /// (OAuth/app tokens carry no role): the server's answer to the push is then authoritative.
    pub fn writable_namespaces(&self) -> Option<Vec<String>> {
        let token = self.auth.as_ref()?.access_token.as_ref()?;
        match token.role {
            TokenRole::Write | TokenRole::Admin => {
                let mut ns = vec![self.name.clone()];
                ns.extend(
                    self.orgs
                        .iter()
                        .filter(|o| matches!(o.role_in_org.as_deref(), None | Some("write" | "admin" | "contributor")))
                        .map(|o| o.name.clone()),
                );
                Some(ns)
            }
            TokenRole::FineGrained => Some(self.write_scopes().filter(|s| s.entity.kind != "model").map(|s| s.entity.name.clone()).collect()),
            _ => Some(Vec::new()),
        }
    }

    /// Single repos a fine-grained token may write to (e.g. a token from an OIDC exchange).
    pub fn writable_repos(&self) -> Vec<String> {
        self.write_scopes().filter(|s| s.entity.kind == "model").map(|s| s.entity.name.clone()).collect()
    }

    fn write_scopes(&self) -> impl Iterator<Item = &Scoped> {
        self.auth
            .iter()
            .flat_map(|a| a.access_token.iter())
            .filter(|t| t.role == TokenRole::FineGrained)
            .flat_map(|t| t.fine_grained.iter())
            .flat_map(|fg| fg.scoped.iter())
            .filter(|s| s.permissions.iter().any(|p| p == "repo.write"))
    }

    /// Whether this token may write to `repo`, as far as whoami can tell (`None` = unknown).
    pub fn can_write(&self, repo: &crate::repo_id::RepoId) -> Option<bool> {
        let ns = self.writable_namespaces()?;
        Some(ns.contains(&repo.namespace) || self.writable_repos().contains(&repo.to_string()))
    }

    /// Where this token may write, for messages: namespaces and single repos.
    pub fn writable_summary(&self) -> String {
        let mut all = self.writable_namespaces().unwrap_or_default();
        all.extend(self.writable_repos());
        if all.is_empty() {
            "nothing".into()
        } else {
            all.join(", ")
        }
    }
}

/// RFC 8693 token exchange, as the Hub's Trusted Publishers accept it at `POST /oauth/token`.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// No `Debug`: `subject_token` is a bearer credential.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenExchangeRequest {
    pub grant_type: String,
    pub subject_token_type: String,
    pub subject_token: String,
    #[serde(default)]
    pub resource: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct TokenExchangeResponse {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
    #[serde(default)]
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// `POST /api/models/{repo}/branch/{branch}`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CreateBranchRequest {
    #[serde(rename = "startingPoint", default, skip_serializing_if = "Option::is_none")]
    pub starting_point: Option<String>,
}

const LFS_EXTENSIONS: &[&str] = &[
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "ftz",
    "gz",
    "h5",
    "joblib",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "wasm",
    "xz",
    "zip",
    "zst",
    "png",
    "jpg",
    "jpeg",
    "webp",
    "gif",
];
const LFS_SIZE: u64 = 10 * 1024 * 1024;

/// The Hub's preupload rule (big, binary-extension or NUL-containing files go to LFS): what the
/// offline Hub answers, and what a dry run assumes for a repo that does not exist yet.
pub fn likely_lfs(path: &str, size: u64, sample: &[u8]) -> bool {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    size > 0 && (size >= LFS_SIZE || LFS_EXTENSIONS.contains(&ext.as_str()) || sample.contains(&0))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRepoRequest {
    pub name: String,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRepoResponse {
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ModelInfo {
    pub id: String,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub private: bool,
    #[serde(rename = "lastModified", default)]
    pub last_modified: Option<String>,
    #[serde(rename = "createdAt", default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
    #[serde(rename = "cardData", default, skip_serializing_if = "Option::is_none")]
    pub card_data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(rename = "blobId", default, skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<LfsPointerInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct LfsPointerInfo {
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    pub size: u64,
    #[serde(rename = "pointerSize", default)]
    pub pointer_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub oid: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<LfsPointerInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreuploadFile {
    pub path: String,
    pub sample: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreuploadRequest {
    pub files: Vec<PreuploadFile>,
    #[serde(rename = "gitIgnore", default, skip_serializing_if = "Option::is_none")]
    pub git_ignore: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreuploadAnswer {
    pub path: String,
    #[serde(rename = "uploadMode")]
    pub upload_mode: String,
    #[serde(rename = "shouldIgnore", default)]
    pub should_ignore: bool,
    #[serde(default)]
    pub oid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreuploadResponse {
    pub files: Vec<PreuploadAnswer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LfsObject {
    pub oid: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LfsBatchRequest {
    pub operation: String,
    #[serde(default)]
    pub transfers: Vec<String>,
    pub objects: Vec<LfsObject>,
    #[serde(default)]
    pub hash_algo: Option<String>,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LfsAction {
    pub href: String,
    #[serde(default)]
    pub header: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LfsActions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<LfsAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<LfsAction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LfsObjectError {
    pub code: u16,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LfsBatchObject {
    pub oid: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<LfsActions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LfsObjectError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LfsBatchResponse {
    #[serde(default)]
    pub transfer: Option<String>,
    pub objects: Vec<LfsBatchObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletePart {
    #[serde(rename = "partNumber")]
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteMultipart {
    pub oid: String,
    pub parts: Vec<CompletePart>,
}

/// One NDJSON line of a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "key", content = "value")]
pub enum CommitLine {
    #[serde(rename = "header")]
    Header {
        summary: String,
        #[serde(default)]
        description: String,
        #[serde(rename = "parentCommit", default, skip_serializing_if = "Option::is_none")]
        parent_commit: Option<String>,
    },
    #[serde(rename = "file")]
    File {
        content: String,
        path: String,
        #[serde(default = "default_encoding")]
        encoding: String,
    },
    #[serde(rename = "lfsFile")]
    LfsFile {
        path: String,
        #[serde(default)]
        algo: Option<String>,
        oid: String,
        #[serde(default)]
        size: Option<u64>,
    },
    #[serde(rename = "deletedFile")]
    DeletedFile { path: String },
    #[serde(rename = "deletedFolder")]
    DeletedFolder { path: String },
}

fn default_encoding() -> String {
    "base64".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitResponse {
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(rename = "commitOid")]
    pub commit_oid: String,
    #[serde(rename = "commitUrl")]
    pub commit_url: String,
    #[serde(rename = "pullRequestUrl", default)]
    pub pull_request_url: Option<String>,
}

/// Percent-encode a revision for a URL path segment, the way huggingface_hub does
/// (`quote(revision, safe="")`): `refs/pr/1` → `refs%2Fpr%2F1`.
pub fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Percent-encode an in-repo path, keeping `/` literal.
pub fn encode_path(p: &str) -> String {
    p.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_lines_serialize_like_the_hub_expects() {
        let l = CommitLine::LfsFile { path: "a.bin".into(), algo: Some("sha256".into()), oid: "ab".into(), size: Some(3) };
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"key":"lfsFile","value":{"path":"a.bin","algo":"sha256","oid":"ab","size":3}}"#);
        let h: CommitLine = serde_json::from_str(r#"{"key":"header","value":{"summary":"s","description":""}}"#).unwrap();
        assert!(matches!(h, CommitLine::Header { parent_commit: None, .. }));
    }

    #[test]
    fn token_roles_read_as_the_hub_names_them_and_unknown_ones_are_kept() {
        for (name, role) in [("read", TokenRole::Read), ("write", TokenRole::Write), ("fineGrained", TokenRole::FineGrained)] {
            assert_eq!(serde_json::from_str::<TokenRole>(&format!("{name:?}")).unwrap(), role);
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("{name:?}"));
            assert_eq!((TokenRole::from_name(name), role.as_str()), (role.clone(), name));
        }
        let odd: TokenRole = serde_json::from_str("\"superUser\"").unwrap();
        assert_eq!(odd, TokenRole::Other("superUser".into()));
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"superUser\"");
        let w: WhoAmI = serde_json::from_str(r#"{"name":"a","auth":{"accessToken":{"displayName":"t"}}}"#).unwrap();
        assert_eq!(w.role().map(TokenRole::as_str), Some(""), "no role sent");
    }

    #[test]
    fn writable_namespaces_follow_role_and_scopes() {
        let w: WhoAmI = serde_json::from_str(
            r#"{"type":"user","name":"alice","orgs":[{"name":"sky-lab"}],
            "auth":{"type":"access_token","accessToken":{"displayName":"t","role":"write"}}}"#,
        )
        .unwrap();
        assert_eq!(w.writable_namespaces().unwrap(), vec!["alice", "sky-lab"]);
        let fg: WhoAmI = serde_json::from_str(
            r#"{"name":"alice","auth":{"accessToken":{"displayName":"t","role":"fineGrained",
            "fineGrained":{"global":[],"scoped":[{"entity":{"type":"user","name":"alice"},"permissions":["repo.content.read"]},
            {"entity":{"type":"org","name":"lab"},"permissions":["repo.write"]}]}}}}"#,
        )
        .unwrap();
        assert_eq!(fg.writable_namespaces().unwrap(), vec!["lab"]);
        let repo: WhoAmI = serde_json::from_str(
            r#"{"name":"alice","auth":{"accessToken":{"displayName":"oidc","role":"fineGrained",
            "fineGrained":{"scoped":[{"entity":{"type":"model","name":"alice/sky"},"permissions":["repo.write"]}]}}}}"#,
        )
        .unwrap();
        let id = |s: &str| crate::repo_id::RepoId::parse(s).unwrap();
        assert_eq!(repo.can_write(&id("alice/sky")), Some(true));
        assert_eq!(repo.can_write(&id("alice/other")), Some(false));
        assert_eq!(repo.writable_summary(), "alice/sky");
        let r: WhoAmI = serde_json::from_str(r#"{"name":"a","auth":{"accessToken":{"displayName":"t","role":"read"}}}"#).unwrap();
        assert!(r.writable_namespaces().unwrap().is_empty());
    }

    #[test]
    fn lfs_mode_follows_extension_size_and_binary() {
        assert!(likely_lfs("w.safetensors", 10, b"x"));
        assert!(likely_lfs("a.txt", 11 * 1024 * 1024, b"x"));
        assert!(likely_lfs("a.dat", 10, b"a\0b"));
        assert!(!likely_lfs("README.md", 100, b"# hi"));
        assert!(!likely_lfs("empty.bin", 0, b""));
    }

    #[test]
    fn segments_encode_like_python_quote() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_path("dir/a b.txt"), "dir/a%20b.txt");
    }
}
