"""huggingface_hub's own trusted-publisher flow against `hfsky hub serve --trust-issuer ...`.

Usage: python oidc_conformance.py --endpoint URL --repo alice/NAME --work DIR
with HF_OIDC_RESOURCE and HF_OIDC_ID_TOKEN in the environment (huggingface_hub reads them in
`get_token()`): whoami and upload_file with no token given, so huggingface_hub exchanges the id
token at {endpoint}/oauth/token. Prints one JSON line; never prints a token.
"""
import argparse
import json
import os
import sys

p = argparse.ArgumentParser()
p.add_argument("--endpoint", required=True)
p.add_argument("--repo", required=True)
p.add_argument("--work", required=True)
args = p.parse_args()

os.environ["HF_ENDPOINT"] = args.endpoint
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = os.path.join(os.path.abspath(args.work), "py-hf-home-oidc")
os.environ.pop("HF_TOKEN", None)

import huggingface_hub  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402

api = HfApi(endpoint=args.endpoint)
try:
    who = api.whoami()
    path = os.path.join(args.work, "from-python-oidc.txt")
    with open(path, "w") as f:
        f.write("published by huggingface_hub through an OIDC exchange\n")
    api.create_repo(args.repo, exist_ok=True)
    info = api.upload_file(path_or_fileobj=path, path_in_repo="from-python-oidc.txt", repo_id=args.repo, commit_message="oidc")
except Exception as e:  # report the failure without any token
    msg = str(e)
    for var in ("HF_OIDC_ID_TOKEN",):
        if os.environ.get(var):
            msg = msg.replace(os.environ[var], "***")
    sys.exit(f"oidc_conformance (huggingface_hub {huggingface_hub.__version__}): FAIL: {type(e).__name__}: {msg}")
print(json.dumps({"ok": True, "user": who["name"], "commit": info.oid, "huggingface_hub": huggingface_hub.__version__}))
