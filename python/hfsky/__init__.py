"""hfsky: the command-line tool, shipped in this wheel as a binary (see `find_hfsky_bin`)."""

import os
import sys
import sysconfig


def find_hfsky_bin() -> str:
    """The path of the hfsky binary this package installed.

    pip puts a wheel's scripts in the environment's scripts folder (`bin/`, or `Scripts\\` on
    Windows), or in the user scheme's with `pip install --user`; the first that holds the binary
    wins. Raises FileNotFoundError naming the folders looked in.
    """
    exe = "hfsky" + (sysconfig.get_config_var("EXE") or "")
    places = [sysconfig.get_path("scripts")]
    user_scheme = {"nt": "nt_user", "posix": "posix_user"}.get(os.name)
    if user_scheme and user_scheme in sysconfig.get_scheme_names():
        places.append(sysconfig.get_path("scripts", scheme=user_scheme))
    places.append(os.path.dirname(sys.executable))
    for place in places:
        path = os.path.join(place, exe)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{exe} is not in {', '.join(places)}: reinstall with `pip install --force-reinstall hfsky`")
