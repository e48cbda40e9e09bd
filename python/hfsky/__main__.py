"""`python -m hfsky ARGS…`: runs the installed binary with ARGS (exit code passed through)."""

import os
import subprocess
import sys

from hfsky import find_hfsky_bin


def main() -> int:
    binary = find_hfsky_bin()
    if os.name == "posix":
        os.execv(binary, [binary, *sys.argv[1:]])
    return subprocess.run([binary, *sys.argv[1:]]).returncode


if __name__ == "__main__":
    sys.exit(main())
