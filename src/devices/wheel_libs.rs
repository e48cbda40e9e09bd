//! The CUDA libraries of NVIDIA's PyPI wheels (`nvidia-cublas`, `nvidia-curand`,
//! `nvidia-cudnn-cu13`, or the ones a PyTorch install brings), found where pip put them.
//!
//! The wheels unpack into `site-packages/nvidia/<name>/lib` (`nvidia/cu13/lib` for the CUDA 13
//! ones, `nvidia/cudnn/lib` for cuDNN), which the dynamic loader does not search. PyTorch loads
//! them from there by path (`torch/__init__.py`, `_preload_cuda_deps`); hfsky does the same, so
//! `pip install hfsky nvidia-cublas …` on Colab is enough, with no `LD_LIBRARY_PATH`. A library
//! opened by path stays loaded, and a later `dlopen` by its soname (cudarc's) gets that same
//! library: glibc matches loaded objects by `DT_SONAME`. The wheels' libraries carry
//! `RUNPATH`/`RPATH` `$ORIGIN`, so what they need (cuBLASLt, cuDNN's sub-libraries) comes from the
//! same folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python environments to look in, most specific first: the one this binary was installed
/// into (`<prefix>/bin/hfsky`, as pip installs the hfsky wheel or the Colab one-liner unpacks the
/// CUDA build into `/usr/local/bin`), the active virtualenv and conda environment, then what
/// `python3`'s `site.getsitepackages()` (and the user site) names: Kaggle's and any other layout.
pub fn site_packages_dirs() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    if let Some(prefix) = std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf)) {
        prefixes.push(prefix);
    }
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            prefixes.push(PathBuf::from(v));
        }
    }
    let mut dirs: Vec<PathBuf> = prefixes.iter().flat_map(|p| under_prefix(p)).collect();
    dirs.extend(from_python("python3"));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// `<prefix>/lib/python3.*/{site,dist}-packages` folders that exist (venv, conda and pip's
/// `/usr/local` layouts; Debian's Python calls the folder `dist-packages`).
pub fn under_prefix(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else { return Vec::new() };
    let mut pythons: Vec<PathBuf> = entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("python3")).map(|e| e.path()).collect();
    pythons.sort();
    pythons.iter().flat_map(|p| [p.join("site-packages"), p.join("dist-packages")]).filter(|d| d.is_dir()).collect()
}

/// The site-packages folders `python` reports, or none when it cannot be run (no Python is
/// fine: the libraries may be on `LD_LIBRARY_PATH` or in the system's library folders).
pub fn from_python(python: &str) -> Vec<PathBuf> {
    let script = "import site\nfor d in site.getsitepackages() + [site.getusersitepackages()]: print(d)";
    let Ok(out) = Command::new(python).args(["-I", "-c", script]).output() else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).filter(|d| d.is_dir()).collect()
}

/// The first of `names` that exists as `site/nvidia/*/lib/<name>` in any folder of
/// `site_packages` (searched in their order): names first, so that CUDA 13's soname anywhere wins
/// over an older fallback name (torch's CUDA 12 cuBLAS) in an earlier folder.
pub fn find(site_packages: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    let lib_dirs: Vec<PathBuf> = site_packages
        .iter()
        .flat_map(|site| {
            let mut libs: Vec<PathBuf> =
                std::fs::read_dir(site.join("nvidia")).into_iter().flatten().flatten().map(|e| e.path().join("lib")).filter(|d| d.is_dir()).collect();
            libs.sort();
            libs
        })
        .collect();
    names.iter().find_map(|name| lib_dirs.iter().map(|lib| lib.join(name)).find(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn wheels_are_found_under_site_and_dist_packages_by_soname_first() {
        let t = tempfile::tempdir().unwrap();
        let colab = t.path().join("usr-local");
        touch(&colab.join("lib/python3.12/dist-packages/nvidia/cu13/lib/libcublas.so.13"));
        touch(&colab.join("lib/python3.12/dist-packages/nvidia/cudnn/lib/libcudnn.so.9"));
        let venv = t.path().join("venv");
        touch(&venv.join("lib/python3.11/site-packages/nvidia/cu13/lib/libcurand.so"));
        touch(&venv.join("lib/python3.11/site-packages/nvidia/cu13/lib/libcurand.so.10"));
        std::fs::create_dir_all(venv.join("lib/python3.11/site-packages/nvidia/include")).unwrap();

        let sites: Vec<PathBuf> = [&colab, &venv].iter().flat_map(|p| under_prefix(p)).collect();
        assert_eq!(sites, [colab.join("lib/python3.12/dist-packages"), venv.join("lib/python3.11/site-packages")]);
        assert_eq!(
            find(&sites, &["libcublas.so.13", "libcublas.so"]),
            Some(colab.join("lib/python3.12/dist-packages/nvidia/cu13/lib/libcublas.so.13"))
        );
        assert_eq!(find(&sites, &["libcudnn.so.9"]), Some(colab.join("lib/python3.12/dist-packages/nvidia/cudnn/lib/libcudnn.so.9")));
        assert_eq!(
            find(&sites, &["libcurand.so.10", "libcurand.so"]),
            Some(venv.join("lib/python3.11/site-packages/nvidia/cu13/lib/libcurand.so.10"))
        );
        assert_eq!(find(&sites, &["libcuda.so.1"]), None, "the driver never comes from a wheel");
        // torch's CUDA 12 cuBLAS in the first environment, CUDA 13's in the second: the soname asked first wins.
        touch(&colab.join("lib/python3.12/dist-packages/nvidia/cublas/lib/libcublas.so.12"));
        touch(&venv.join("lib/python3.11/site-packages/nvidia/cu13/lib/libcublas.so.13"));
        std::fs::remove_file(colab.join("lib/python3.12/dist-packages/nvidia/cu13/lib/libcublas.so.13")).unwrap();
        assert_eq!(
            find(&sites, &["libcublas.so.13", "libcublas.so", "libcublas.so.12"]),
            Some(venv.join("lib/python3.11/site-packages/nvidia/cu13/lib/libcublas.so.13"))
        );
        assert!(under_prefix(&t.path().join("no-such-prefix")).is_empty());
    }

    #[test]
    fn pythons_site_packages_are_asked_and_a_missing_python_is_no_error() {
        assert!(from_python("/no/such/python3").is_empty());
        let Ok(out) = Command::new("python3").args(["-I", "-c", "import site; print(site.getsitepackages()[0])"]).output() else {
            return; // no python3 on this machine: nothing more to compare with
        };
        let first = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(from_python("python3").contains(&first), first.is_dir(), "{first:?}");
    }
}
