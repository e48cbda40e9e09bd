//! Where a dataset comes from: a local folder, or a Hub dataset repo in the `imagefolder`
//! layout (images plus `metadata.jsonl`/`metadata.csv` with a `file_name` column, as the
//! datasets library's ImageFolder builder reads it), downloaded through hf-hub into the
//! standard cache (`datasets--namespace--name`) like diffusers' `--dataset_name`. Parsed once
//! at the edge ([`DatasetSource`] from train.yaml or a flag), resolved once ([`resolve`]) before
//! training; everything after reads a local folder.

use super::captions::{METADATA_CSV, METADATA_FILE};
use super::IMAGE_EXTENSIONS;
use crate::hub::download::{hub_offline, RepoFetcher};
use crate::hub::{HubClient, HubError};
use crate::repo_id::{RepoId, RepoRef};
use std::path::{Path, PathBuf};

/// The split folder read when a dataset repo has one (`train/`, the imagefolder layout with
/// splits); otherwise the whole repo is the training set.
pub const TRAIN_SPLIT: &str = "train";

/// A `dataset:` value: a local folder, or a Hub dataset repo id. An existing path wins; a valid
/// `namespace/name` that is no local path is a Hub dataset; anything else stays a path, which
/// [`resolve`] reports as neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// A folder of photos on this machine.
    Local(PathBuf),
    /// A Hub dataset repo, not downloaded yet.
    Hub(RepoId),
    /// A Hub dataset repo after [`resolve`]: the folder of its snapshot in the cache (the split
    /// folder when there is one) and the commit it was downloaded at.
    Downloaded { repo: RepoId, commit: String, folder: PathBuf },
}

impl DatasetSource {
    /// `s` as a `dataset:` value, judged against the working directory (see [`Self::rebase`]).
    pub fn parse(s: &str) -> DatasetSource {
        match RepoId::parse(s) {
            Ok(id) if !Path::new(s).exists() => DatasetSource::Hub(id),
            _ => DatasetSource::Local(PathBuf::from(s)),
        }
    }

    /// A value read from a file in `base`: relative paths are relative to it, and a folder
    /// there named like a repo id wins over the Hub.
    pub fn rebase(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        match self {
            DatasetSource::Local(p) if p.is_relative() => *p = base.join(&*p),
            DatasetSource::Hub(id) if base.join(id.to_string()).exists() => *self = DatasetSource::Local(base.join(id.to_string())),
            _ => {}
        }
    }

    /// The Hub dataset repo, when the photos come from one.
    pub fn hub_repo(&self) -> Option<&RepoId> {
        match self {
            DatasetSource::Local(_) => None,
            DatasetSource::Hub(repo) | DatasetSource::Downloaded { repo, .. } => Some(repo),
        }
    }

    /// The local folder to read: the folder itself, or a downloaded dataset's snapshot folder.
    /// Errors for a Hub dataset that [`resolve`] has not downloaded.
    pub fn folder(&self) -> Result<&Path, DatasetSourceError> {
        match self {
            DatasetSource::Local(p) => Ok(p),
            DatasetSource::Downloaded { folder, .. } => Ok(folder),
            DatasetSource::Hub(id) => Err(DatasetSourceError::NotDownloaded(id.clone())),
        }
    }
}

impl std::fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetSource::Local(p) => write!(f, "{}", p.display()),
            DatasetSource::Hub(id) => write!(f, "{id}"),
            DatasetSource::Downloaded { repo, commit, .. } => write!(f, "{repo}@{}", &commit[..commit.len().min(12)]),
        }
    }
}

impl std::str::FromStr for DatasetSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatasetSource::parse(s))
    }
}

impl<'de> serde::Deserialize<'de> for DatasetSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(DatasetSource::parse(&String::deserialize(d)?))
    }
}

/// As it was given (a path, or the repo id; `train_config.yaml` records the id, and
/// `dataset_revision` the revision asked for), so the file trains again the same way.
impl serde::Serialize for DatasetSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DatasetSource::Local(p) => s.collect_str(&p.display()),
            DatasetSource::Hub(repo) | DatasetSource::Downloaded { repo, .. } => s.collect_str(repo),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetSourceError {
    #[error("dataset: {} does not exist, and is not a Hub dataset id (`namespace/name`) either: pass the folder that holds your photos, or a dataset repo such as alice/sky-photos", .0.display())]
    NotFound(PathBuf),
    #[error("dataset_revision: {revision} is set, but dataset {} is a local folder: remove dataset_revision (it names a revision of a Hub dataset)", .path.display())]
    RevisionForLocal { path: PathBuf, revision: String },
    #[error("dataset: the Hub ({endpoint}) has no dataset {repo}{hint}")]
    NoRepo { repo: RepoId, endpoint: String, hint: String },
    #[error("dataset_revision: dataset {repo} has no revision {revision} (a branch, tag or commit)")]
    NoRevision { repo: RepoId, revision: String },
    #[error("dataset {repo}{folder} has no images ({}){found}: hfsky trains on the Hub's imagefolder layout, images with a metadata.jsonl or metadata.csv (`file_name` + a caption column)", IMAGE_EXTENSIONS.join(", "))]
    NoImages { repo: RepoId, folder: String, found: String },
    #[error("dataset {0} is a Hub dataset that has not been downloaded yet")]
    NotDownloaded(RepoId),
    #[error("dataset {repo}: {source}")]
    Hub { repo: RepoId, source: HubError },
    #[error(transparent)]
    Folder(#[from] super::DatasetError),
    #[error(transparent)]
    Captions(#[from] super::captions::CaptionError),
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// A photo folder ready to publish as a Hub dataset: the folder to push (the photo folder
/// itself, or a staging copy of it made of hard links plus what was generated) and what was
/// added.
#[derive(Debug)]
pub struct PushFolder {
    pub dir: PathBuf,
    /// Files written for the upload that the photo folder lacks (`metadata.jsonl`, `README.md`).
    pub generated: Vec<&'static str>,
    /// Where the captions come from, for the user.
    pub captions: super::captions::Captions,
    pub images: usize,
    _staging: Option<tempfile::TempDir>,
}

/// Prepares `dir` for `push --repo-type dataset` in the imagefolder layout that [`resolve`]
/// and `datasets.load_dataset` read: the photos are checked (none → error), a metadata file
/// there is validated and kept; sidecar `.txt` captions without one become a `metadata.jsonl`
/// (`file_name` + `text`, diffusers' default caption column; a row for every image, empty when
/// it has no caption, as imagefolder wants a row per image); and a dataset card
/// ([`crate::card::dataset_card`]) is added when neither the folder nor the repo
/// (`card_on_hub`) has one. Nothing is written into `dir`: what is added goes into a staging
/// folder of hard links beside it (or in the temp folder, as copies, where linking fails).
pub fn prepare_push(dir: &Path, repo: &RepoId, card_on_hub: bool) -> Result<PushFolder, DatasetSourceError> {
    use super::captions::{load_captions, CaptionSource};
    let images = super::list_images(dir)?;
    let captions = load_captions(dir, &images, CaptionSource::Sidecar, None)?;
    let mut generated: Vec<(&'static str, Vec<u8>)> = Vec::new();
    if captions.source == CaptionSource::Sidecar && captions.captions.iter().any(Option::is_some) {
        let mut jsonl = Vec::new();
        for (img, caption) in images.iter().zip(&captions.captions) {
            let row = serde_json::json!({ "file_name": super::relative_name(dir, img), "text": caption.as_deref().unwrap_or("") });
            serde_json::to_writer(&mut jsonl, &row).expect("JSON");
            jsonl.push(b'\n');
        }
        generated.push((METADATA_FILE, jsonl));
    }
    if !dir.join(crate::names::README).is_file() && !card_on_hub {
        let described = match (&captions.file, &captions.column) {
            (Some(file), Some(column)) => Some((file.file_name().and_then(|n| n.to_str()).unwrap_or(METADATA_FILE).to_string(), column.clone())),
            _ if !generated.is_empty() => Some((METADATA_FILE.to_string(), "text".to_string())),
            _ => None,
        };
        let card = crate::card::dataset_card(&repo.to_string(), images.len(), described.as_ref().map(|(f, c)| (f.as_str(), c.as_str())));
        generated.push((crate::names::README, card.into_bytes()));
    }
    let n = images.len();
    if generated.is_empty() {
        return Ok(PushFolder { dir: dir.to_path_buf(), generated: vec![], captions, images: n, _staging: None });
    }
    let stage = |e: std::io::Error, path: &Path| DatasetSourceError::Write { path: path.to_path_buf(), source: e };
    // Beside the folder, so the photos are hard links on the same filesystem.
    let staging = dir
        .parent()
        .and_then(|p| tempfile::Builder::new().prefix(".hfsky-dataset-").tempdir_in(p).ok())
        .map_or_else(|| tempfile::tempdir().map_err(|e| stage(e, &std::env::temp_dir())), Ok)?;
    let files = crate::hub::push::scan_folder(dir, &[], &[]).map_err(|source| DatasetSourceError::Hub { repo: repo.clone(), source })?;
    for f in files {
        let target = staging.path().join(&f.path_in_repo);
        std::fs::create_dir_all(target.parent().expect("inside the staging folder")).map_err(|e| stage(e, &target))?;
        crate::atomic::link_or_copy(&f.abs, &target).map_err(|e| stage(e, &target))?;
    }
    for (name, bytes) in &generated {
        let target = staging.path().join(name);
        crate::atomic::write(&target, bytes).map_err(|e| stage(e, &target))?;
    }
    Ok(PushFolder {
        dir: staging.path().to_path_buf(),
        generated: generated.iter().map(|(n, _)| *n).collect(),
        captions,
        images: n,
        _staging: Some(staging),
    })
}

/// What [`resolve`] fetches from a dataset repo's file list: the image files and the metadata
/// file(s) of the training split, nothing else (cards, parquet conversions, scripts). Returns
/// the split folder (`""` or `train/`) and the chosen (path, size) entries.
pub fn select_files(files: &[(String, u64)]) -> (&'static str, Vec<(String, u64)>) {
    let split = format!("{TRAIN_SPLIT}/");
    let prefix = if files.iter().any(|(p, _)| p.starts_with(&split)) { "train/" } else { "" };
    let picked = files
        .iter()
        .filter_map(|(p, size)| {
            let rel = p.strip_prefix(prefix)?;
            // Hidden files and folders are no part of an imagefolder (nor of a local scan).
            if rel.split('/').any(|seg| seg.starts_with('.')) {
                return None;
            }
            let ext = rel.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
            let keep = IMAGE_EXTENSIONS.contains(&ext.as_str()) || rel == METADATA_FILE || rel == METADATA_CSV;
            keep.then(|| (p.clone(), *size))
        })
        .collect();
    (prefix, picked)
}

/// Makes `source` a local folder: a local path is checked to exist; a Hub dataset's images and
/// metadata are downloaded (or, with `HF_HUB_OFFLINE=1`, found in the cache) at `revision`
/// (default `main`), reporting through the client's download progress. Returns the
/// [`DatasetSource::Downloaded`] (or the same local folder).
pub async fn resolve(source: &DatasetSource, revision: Option<&str>, client: &HubClient) -> Result<DatasetSource, DatasetSourceError> {
    let repo = match source {
        DatasetSource::Local(path) => {
            if let Some(revision) = revision {
                return Err(DatasetSourceError::RevisionForLocal { path: path.clone(), revision: revision.into() });
            }
            if !path.exists() {
                return Err(DatasetSourceError::NotFound(path.clone()));
            }
            return Ok(source.clone());
        }
        DatasetSource::Downloaded { .. } => return Ok(source.clone()),
        DatasetSource::Hub(repo) => repo,
    };
    let hub = |source: HubError| DatasetSourceError::Hub { repo: repo.clone(), source };
    let target = RepoRef::dataset(repo);
    let offline = hub_offline();
    // The commit first: one snapshot even if the branch moves while the files come down, and a
    // clear error for a repo or revision that does not exist.
    let commit = if offline {
        cached_commit(repo, revision.unwrap_or("main")).ok_or_else(|| {
            hub(HubError::Download(format!(
                "HF_HUB_OFFLINE=1 and {target} at {} is not in the cache: download it once online",
                revision.unwrap_or("main")
            )))
        })?
    } else {
        match client.repo_info(target, revision).await {
            Ok(info) => info.sha.ok_or_else(|| {
                hub(HubError::Protocol { url: format!("{}/api/datasets/{repo}", client.endpoint()), detail: "the dataset info has no sha".into() })
            })?,
            Err(e) if e.error_code() == Some("RevisionNotFound") => {
                return Err(DatasetSourceError::NoRevision { repo: repo.clone(), revision: revision.unwrap_or("main").into() })
            }
            Err(e) if e.error_code() == Some("RepoNotFound") || e.status() == Some(404) => {
                let hint = if client.has_token() {
                    " (or it is private to another account); check the name, or pass a local folder".to_string()
                } else {
                    " that can be read without a token; check the name, or log in (`hfsky login`, HF_TOKEN) if it is private".to_string()
                };
                return Err(DatasetSourceError::NoRepo { repo: repo.clone(), endpoint: client.endpoint().into(), hint });
            }
            Err(e) => return Err(hub(e)),
        }
    };
    let mut fetcher = RepoFetcher::new(client, target, Some(&commit)).map_err(hub)?;
    let listing = if offline {
        fetcher.list(&cache_snapshot(repo, &commit)).await.map_err(hub)?
    } else {
        client.list_tree(target, &commit).await.map_err(hub)?.into_iter().filter(|e| e.kind == "file").map(|e| (e.path, e.size)).collect()
    };
    let (split, files) = select_files(&listing);
    if !files.iter().any(|(p, _)| !p.ends_with(METADATA_FILE) && !p.ends_with(METADATA_CSV)) {
        let parquet = listing.iter().filter(|(p, _)| p.ends_with(".parquet")).count();
        let found = if parquet > 0 {
            format!(
                "; it holds {parquet} parquet file(s), a format hfsky does not read: publish the photos as files (`hfsky push --repo-type dataset`)"
            )
        } else {
            String::new()
        };
        return Err(DatasetSourceError::NoImages {
            repo: repo.clone(),
            folder: if split.is_empty() { String::new() } else { format!(" ({split})") },
            found,
        });
    }
    let total = files.iter().map(|(_, s)| s).sum();
    let paths: Vec<String> = files.into_iter().map(|(p, _)| p).collect();
    let local = fetcher.files(&paths, total).await.map_err(hub)?;
    // Files were fetched by commit, so hf-hub wrote no ref: record the revision's commit the way
    // huggingface_hub does (`refs/<revision>`), so HF_HUB_OFFLINE=1 finds it by name later.
    let asked = revision.unwrap_or("main");
    if !offline && asked != commit {
        let r = cache_repo_dir(repo).join("refs").join(asked);
        std::fs::create_dir_all(r.parent().expect("under refs/"))
            .and_then(|()| crate::atomic::write(&r, commit.as_bytes()))
            .map_err(|source| DatasetSourceError::Write { path: r, source })?;
    }
    // `…/snapshots/<commit>/<path>` → the snapshot folder, then the split in it.
    let first = (&local[0], &paths[0]);
    let mut root = first.0.clone();
    for _ in first.1.split('/') {
        root.pop();
    }
    Ok(DatasetSource::Downloaded { repo: repo.clone(), commit, folder: root.join(split.trim_end_matches('/')) })
}

/// The cache folder of `repo` as huggingface_hub lays it out (`datasets--namespace--name`).
fn cache_repo_dir(repo: &RepoId) -> PathBuf {
    hf_hub::resolve_cache_dir().join(format!("datasets--{}--{}", repo.namespace, repo.name))
}

fn cache_snapshot(repo: &RepoId, commit: &str) -> PathBuf {
    cache_repo_dir(repo).join("snapshots").join(commit)
}

/// The commit a revision names in the cache (`refs/<revision>`, or the revision itself when it
/// is a commit with a snapshot).
fn cached_commit(repo: &RepoId, revision: &str) -> Option<String> {
    let dir = cache_repo_dir(repo);
    if revision.len() == 40 && dir.join("snapshots").join(revision).is_dir() {
        return Some(revision.to_string());
    }
    let commit = std::fs::read_to_string(dir.join("refs").join(revision)).ok()?.trim().to_string();
    dir.join("snapshots").join(&commit).is_dir().then_some(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_path_wins_then_a_repo_id_then_a_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("alice/sky")).unwrap();
        assert_eq!(DatasetSource::parse("alice/sky-photos"), DatasetSource::Hub(RepoId::parse("alice/sky-photos").unwrap()));
        // Not a repo id (three parts, a dot segment, no slash): a path, reported missing later.
        for p in ["photos", "./photos", "a/b/c", "../x/y"] {
            assert_eq!(DatasetSource::parse(p), DatasetSource::Local(PathBuf::from(p)), "{p}");
        }
        let here = d.path().join("alice/sky");
        assert_eq!(DatasetSource::parse(here.to_str().unwrap()), DatasetSource::Local(here.clone()));
        // From a file in `d`: its folder named like a repo wins; a relative path is rebased.
        let mut s = DatasetSource::parse("alice/sky");
        s.rebase(d.path());
        assert_eq!(s, DatasetSource::Local(here));
        let mut s = DatasetSource::parse("photos");
        s.rebase(d.path());
        assert_eq!(s, DatasetSource::Local(d.path().join("photos")));
        let mut s = DatasetSource::parse("bob/clouds");
        s.rebase(d.path());
        assert_eq!(s, DatasetSource::Hub(RepoId::parse("bob/clouds").unwrap()));
    }

    #[test]
    fn a_local_folder_is_checked_without_the_hub() {
        let d = tempfile::tempdir().unwrap();
        // An endpoint nothing listens on: a local folder never asks the Hub.
        let client = HubClient::new("http://127.0.0.1:9", None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let here = DatasetSource::Local(d.path().to_path_buf());
        assert_eq!(rt.block_on(resolve(&here, None, &client)).unwrap(), here);
        let e = rt.block_on(resolve(&here, Some("v1"), &client)).unwrap_err();
        assert!(matches!(e, DatasetSourceError::RevisionForLocal { .. }) && e.to_string().starts_with("dataset_revision: v1"), "{e}");
        let missing = DatasetSource::Local(d.path().join("nope"));
        let e = rt.block_on(resolve(&missing, None, &client)).unwrap_err();
        assert!(matches!(e, DatasetSourceError::NotFound(_)) && e.to_string().starts_with("dataset: "), "{e}");
    }

    #[test]
    fn only_a_hub_dataset_needs_downloading_and_the_config_records_it_as_given() {
        let id = RepoId::parse("alice/sky").unwrap();
        assert!(matches!(DatasetSource::Hub(id.clone()).folder(), Err(DatasetSourceError::NotDownloaded(_))));
        let done = DatasetSource::Downloaded { repo: id.clone(), commit: "a".repeat(40), folder: "/cache/x".into() };
        assert_eq!(done.folder().unwrap(), Path::new("/cache/x"));
        assert_eq!(serde_yaml::to_string(&done).unwrap().trim(), "alice/sky");
        assert_eq!(serde_yaml::from_str::<DatasetSource>("alice/sky").unwrap(), DatasetSource::Hub(id));
        assert_eq!(serde_yaml::to_string(&DatasetSource::Local("/p/photos".into())).unwrap().trim(), "/p/photos");
    }

    #[test]
    fn a_photo_folder_is_published_as_an_imagefolder_without_touching_it() {
        let d = tempfile::tempdir().unwrap();
        let photos = d.path().join("photos");
        std::fs::create_dir_all(photos.join("sub")).unwrap();
        let png = |p: &Path| image::RgbImage::new(8, 8).save(p).unwrap();
        png(&photos.join("a.png"));
        png(&photos.join("sub/b.png"));
        std::fs::write(photos.join("a.txt"), "red sky").unwrap();
        let repo = RepoId::parse("alice/sky").unwrap();
        let before = std::fs::read_dir(&photos).unwrap().count();
        let out = prepare_push(&photos, &repo, false).unwrap();
        assert_eq!(out.generated, [METADATA_FILE, crate::names::README]);
        assert_eq!(std::fs::read_dir(&photos).unwrap().count(), before, "nothing is written into the photo folder");
        let rows = std::fs::read_to_string(out.dir.join(METADATA_FILE)).unwrap();
        assert_eq!(rows, "{\"file_name\":\"a.png\",\"text\":\"red sky\"}\n{\"file_name\":\"sub/b.png\",\"text\":\"\"}\n");
        assert!(out.dir.join("sub/b.png").is_file() && out.dir.join("a.txt").is_file());
        let card = std::fs::read_to_string(out.dir.join(crate::names::README)).unwrap();
        assert!(card.contains("- text-to-image") && card.contains("`text` column of `metadata.jsonl`"), "{card}");
        let staged = out.dir.clone();
        drop(out);
        assert!(!staged.exists(), "the staging folder goes with the upload");
        // A card on the Hub is kept; a folder with its metadata file and card is pushed as it is.
        assert_eq!(prepare_push(&photos, &repo, true).unwrap().generated, [METADATA_FILE]);
        std::fs::remove_file(photos.join("a.txt")).unwrap();
        std::fs::write(photos.join(METADATA_FILE), "{\"file_name\": \"a.png\", \"caption\": \"x\"}\n").unwrap();
        std::fs::write(photos.join("README.md"), "# mine\n").unwrap();
        let out = prepare_push(&photos, &repo, false).unwrap();
        assert!(out.generated.is_empty() && out.dir == photos);
        // A metadata row for a photo that is not there is refused before anything is uploaded.
        std::fs::write(photos.join(METADATA_FILE), "{\"file_name\": \"nope.png\", \"text\": \"x\"}\n").unwrap();
        assert!(prepare_push(&photos, &repo, false).unwrap_err().to_string().contains("nope.png"));
        assert!(matches!(prepare_push(&d.path().join("none"), &repo, false), Err(DatasetSourceError::Folder(_))));
    }

    #[test]
    fn only_the_training_splits_images_and_metadata_are_fetched() {
        let files = |paths: &[&str]| paths.iter().map(|p| (p.to_string(), 1)).collect::<Vec<_>>();
        let flat = files(&["README.md", ".gitattributes", "metadata.jsonl", "a.jpg", "sub/b.PNG", "data.parquet", "notes.txt", ".hidden/c.jpg"]);
        let (split, got) = select_files(&flat);
        assert_eq!((split, got.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()), ("", vec!["metadata.jsonl", "a.jpg", "sub/b.PNG"]));
        let split_layout =
            files(&["README.md", "train/metadata.csv", "train/a.webp", "test/b.jpg", "test/metadata.csv", "c.jpg", "train/sub/metadata.jsonl"]);
        let (split, got) = select_files(&split_layout);
        assert_eq!((split, got.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()), ("train/", vec!["train/metadata.csv", "train/a.webp"]));
    }
}
