"""The official huggingface_hub client against `hfsky hub serve`.

Phases (driven by tests/python_conformance.rs):
  push    -- whoami, create_repo (twice, exist_ok), upload_folder of a small card, a small text
             file and an 11 MiB binary (LFS, multipart), model_info, list_repo_files,
             hf_hub_download of each file (byte-identical), a missing file raises.
  verify  -- a repo that hfsky pushed: list_repo_files equals the folder hfsky pushed and
             hf_hub_download of each file is byte-identical.
Prints one JSON line: {"ok": true, ...}. Any mismatch raises (non-zero exit).
"""
import argparse
import json
import os
import random
import sys

p = argparse.ArgumentParser()
p.add_argument("--endpoint", required=True)
p.add_argument("--token", required=True)
p.add_argument("--user", required=True)
p.add_argument("--work", required=True)
p.add_argument("--repo", required=True)
p.add_argument("--phase", choices=["push", "verify"], required=True)
p.add_argument("--expect-dir")
args = p.parse_args()

# Must be set before huggingface_hub is imported: it reads them at import time.
os.environ["HF_ENDPOINT"] = args.endpoint
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = os.path.join(args.work, "py-hf-home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)

from huggingface_hub import HfApi, hf_hub_download  # noqa: E402
from huggingface_hub import errors as hf_errors  # noqa: E402

api = HfApi(endpoint=args.endpoint, token=args.token)


def files_of(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            full = os.path.join(root, n)
            out[os.path.relpath(full, folder).replace(os.sep, "/")] = full
    return out


def check_downloads(expected):
    for rel, full in expected.items():
        got = hf_hub_download(args.repo, rel, token=args.token, endpoint=args.endpoint)
        with open(got, "rb") as a, open(full, "rb") as b:
            assert a.read() == b.read(), f"{rel}: downloaded bytes differ"


def expect_missing():
    missing = getattr(hf_errors, "RemoteEntryNotFoundError", None) or hf_errors.EntryNotFoundError
    try:
        hf_hub_download(args.repo, "no/such/file.txt", token=args.token, endpoint=args.endpoint)
    except missing:
        return
    raise AssertionError("downloading a missing file did not raise EntryNotFound")


if args.phase == "push":
    who = api.whoami()
    assert who["name"] == args.user, who
    assert who["auth"]["accessToken"]["role"] == "write", who
    api.create_repo(args.repo, exist_ok=True)
    api.create_repo(args.repo, exist_ok=True)
    folder = os.path.join(args.work, "py-upload")
    os.makedirs(os.path.join(folder, "nested"), exist_ok=True)
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("---\nlicense: mit\ntags:\n- lora\n---\n# pushed by huggingface_hub\n")
    with open(os.path.join(folder, "nested", "notes.txt"), "w") as f:
        f.write("small regular file\n")
    rng = random.Random(1234)
    with open(os.path.join(folder, "big.bin"), "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(11 * 1024 * 1024)))
    commit = api.upload_folder(repo_id=args.repo, folder_path=folder, commit_message="upload from huggingface_hub")
    info = api.model_info(args.repo)
    assert info.sha and len(info.sha) == 40, info.sha
    names = {s.rfilename for s in info.siblings}
    expected = files_of(folder)
    assert set(expected) <= names, (expected.keys(), names)
    assert set(api.list_repo_files(args.repo)) == set(expected) | {".gitattributes"}
    assert "lora" in (info.tags or []), info.tags
    check_downloads(expected)
    expect_missing()
    print(json.dumps({"ok": True, "commit": info.sha, "dir": folder}))
else:
    expected = files_of(args.expect_dir)
    listed = set(api.list_repo_files(args.repo)) - {".gitattributes"}
    assert listed == set(expected), (sorted(listed), sorted(expected))
    check_downloads(expected)
    expect_missing()
    print(json.dumps({"ok": True, "files": len(expected)}))
