"""The official huggingface_hub client against `hfsky hub serve`.

Usage:
  python hub_conformance.py --endpoint URL --token TOKEN --user alice --work DIR \
      --phase push|verify-hfsky-push --repo alice/NAME [--repo-type model|dataset] [--expect-dir D]

Phases (driven by tests/cli/python_conformance.rs; `verify` is an alias of `verify-hfsky-push`):
  push               -- whoami (name + write role), create_repo twice (exist_ok), upload_folder
                        (legacy LFS path, HF_HUB_DISABLE_XET=1) of a README.md with YAML front
                        matter, a small nested/notes.txt and an 11 MiB seeded-random big.bin
                        (LFS; multipart when the server's chunk size is below 11 MiB), then
                        model_info, list_repo_files, hf_hub_download of each file (byte-identical,
                        also pinned to the commit sha), and a missing file raises
                        RemoteEntryNotFoundError.
  verify-hfsky-push  -- a repo that hfsky pushed from --expect-dir: list_repo_files equals the
                        files under --expect-dir (posix relative paths; the Hub's own
                        .gitattributes aside), hf_hub_download of each is byte-identical, and a
                        missing file raises RemoteEntryNotFoundError.
With --repo-type dataset every call names the dataset repo (`repo_type="dataset"`: /api/datasets/,
the datasets/ resolve and LFS prefixes), as for a model otherwise.
Prints one JSON line: {"ok": true, ...}. Any mismatch exits 1 with a message on stderr.
The token is never printed.
"""
import argparse
import json
import os
import random
import re
import shutil
import sys

p = argparse.ArgumentParser()
p.add_argument("--endpoint", required=True)
p.add_argument("--token", required=True)
p.add_argument("--user", required=True)
p.add_argument("--work", required=True)
p.add_argument("--repo", required=True)
p.add_argument("--phase", choices=["push", "verify-hfsky-push", "verify"], required=True)
p.add_argument("--repo-type", choices=["model", "dataset"], default="model")
p.add_argument("--expect-dir")
args = p.parse_args()
if args.phase == "verify":
    args.phase = "verify-hfsky-push"
if args.phase == "verify-hfsky-push" and not args.expect_dir:
    p.error("--expect-dir is required for --phase verify-hfsky-push")

# Must be set before huggingface_hub is imported: it reads them at import time.
# Xet off: hf_xet is installed with huggingface_hub and would otherwise bypass the LFS batch API.
os.environ["HF_ENDPOINT"] = args.endpoint.rstrip("/")
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH",
            "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE"):
    os.environ.pop(var, None)
hf_home = os.path.join(os.path.abspath(args.work), f"py-hf-home-{args.phase}")
shutil.rmtree(hf_home, ignore_errors=True)  # a fresh cache every run
os.makedirs(hf_home)
os.environ["HF_HOME"] = hf_home

import huggingface_hub  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download  # noqa: E402
from huggingface_hub import errors as hf_errors  # noqa: E402

ENDPOINT = os.environ["HF_ENDPOINT"]
api = HfApi(endpoint=ENDPOINT, token=args.token)
SHA1_HEX = re.compile(r"^[0-9a-f]{40}$")
KIND = args.repo_type


def fail(msg):
    text = str(msg).replace(args.token, "hf_***")
    sys.exit(f"hub_conformance ({args.phase}, huggingface_hub {huggingface_hub.__version__}): FAIL: {text}")


def check(cond, msg):
    if not cond:
        fail(msg)


def files_of(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            full = os.path.join(root, n)
            out[os.path.relpath(full, folder).replace(os.sep, "/")] = full
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_downloads(expected, revision=None):
    for rel, full in sorted(expected.items()):
        try:
            got = hf_hub_download(args.repo, rel, revision=revision, repo_type=KIND, token=args.token, endpoint=ENDPOINT)
        except Exception as e:  # noqa: BLE001
            fail(f"hf_hub_download({rel!r}, revision={revision!r}) raised {type(e).__name__}: {e}")
        a, b = read(got), read(full)
        check(a == b, f"{rel} (revision={revision!r}): downloaded {len(a)} bytes differ from the local {len(b)} bytes")


def expect_missing():
    # RemoteEntryNotFoundError (>= 1.0) needs a 404 carrying `X-Error-Code: EntryNotFound` on HEAD
    # /resolve. A plain 404 or a network error surfaces as LocalEntryNotFoundError, which also
    # subclasses EntryNotFoundError, so it is rejected explicitly.
    remote = getattr(hf_errors, "RemoteEntryNotFoundError", None) or hf_errors.EntryNotFoundError
    local = getattr(hf_errors, "LocalEntryNotFoundError", None)
    try:
        hf_hub_download(args.repo, "no/such/file.txt", repo_type=KIND, token=args.token, endpoint=ENDPOINT)
    except remote as e:
        if local is not None and isinstance(e, local):
            fail(f"missing file raised LocalEntryNotFoundError (the server's 404 lacks X-Error-Code: EntryNotFound?): {e}")
        return
    except Exception as e:  # noqa: BLE001
        fail(f"missing file raised {type(e).__name__} instead of {remote.__name__}: {e}")
    fail("downloading a missing file did not raise")


def call(what, fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001
        fail(f"{what} raised {type(e).__name__}: {e}")


if args.phase == "push":
    who = call("whoami", api.whoami)
    check(who.get("name") == args.user, f"whoami name {who.get('name')!r} != {args.user!r}")
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    check(role == "write", f"whoami auth.accessToken.role {role!r} != 'write'")
    url1 = call("create_repo", api.create_repo, args.repo, repo_type=KIND, exist_ok=True)
    url2 = call("create_repo (again, exist_ok)", api.create_repo, args.repo, repo_type=KIND, exist_ok=True)
    check(url1.repo_id == args.repo and url2.repo_id == args.repo, f"create_repo urls {url1!r} {url2!r}")

    folder = os.path.join(os.path.abspath(args.work), "py-upload")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "nested"))
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("---\nlicense: mit\ntags:\n- lora\n---\n# pushed by huggingface_hub\n")
    with open(os.path.join(folder, "nested", "notes.txt"), "w") as f:
        f.write("small regular file\n")
    with open(os.path.join(folder, "big.bin"), "wb") as f:
        f.write(random.Random(1234).randbytes(11 * 1024 * 1024))  # > 10 MB: always LFS
    expected = files_of(folder)

    commit = call("upload_folder", api.upload_folder, repo_id=args.repo, folder_path=folder, repo_type=KIND,
                  commit_message="upload from huggingface_hub")
    check(SHA1_HEX.match(commit.oid or ""), f"upload_folder commit oid {commit.oid!r} is not 40 hex")
    check(commit.repo_url.repo_id == args.repo, f"commitUrl {commit.commit_url!r} does not name {args.repo}")

    info = call("repo_info", api.repo_info, args.repo, repo_type=KIND)
    check(info.id == args.repo, f"model_info id {info.id!r} != {args.repo!r}")
    check(info.sha and SHA1_HEX.match(info.sha), f"model_info sha {info.sha!r} is not 40 hex")
    check(info.sha == commit.oid, f"model_info sha {info.sha} != commit {commit.oid}")
    names = {s.rfilename for s in (info.siblings or [])}
    check(set(expected) <= names, f"model_info siblings {sorted(names)} lack some of {sorted(expected)}")
    check("lora" in (info.tags or []), f"model_info tags {info.tags} lack the card's 'lora'")

    listed = set(call("list_repo_files", api.list_repo_files, args.repo, repo_type=KIND))
    check(listed == set(expected) | {".gitattributes"},
          f"list_repo_files {sorted(listed)} != {sorted(set(expected) | {'.gitattributes'})}")

    check_downloads(expected)
    check_downloads({"big.bin": expected["big.bin"]}, revision=commit.oid)
    expect_missing()
    print(json.dumps({"ok": True, "commit": info.sha, "dir": folder, "huggingface_hub": huggingface_hub.__version__}))
else:
    expected = files_of(args.expect_dir)
    check(expected, f"--expect-dir {args.expect_dir} has no files")
    listed = set(call("list_repo_files", api.list_repo_files, args.repo, repo_type=KIND))
    if ".gitattributes" not in expected:
        listed.discard(".gitattributes")
    check(listed == set(expected), f"list_repo_files {sorted(listed)} != files under --expect-dir {sorted(expected)}")
    check_downloads(expected)
    expect_missing()
    print(json.dumps({"ok": True, "files": len(expected), "huggingface_hub": huggingface_hub.__version__}))
