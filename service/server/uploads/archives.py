"""Archive safety: a zip or tar of images is refused (422) when it is corrupt, when a member's name
could escape its folder, or when a member is a link or special file."""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from service.server.errors import refuse


def check_archive(path: Path, suffix: str) -> None:
    """Reject archives that are unreadable or whose members could escape their folder.

    open_source reads members by name only, but the service refuses such archives outright:
    they are never legitimate sample sets.
    """
    def bad_name(name: str) -> bool:
        p = PurePosixPath(name.replace("\\", "/"))
        return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")

    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip()
                if bad is not None:
                    raise ValueError(f"member {bad!r} is corrupt (CRC mismatch)")
            links = []
        elif suffix in (".tar", ".tar.gz", ".tgz"):
            with tarfile.open(path) as tf:
                members = tf.getmembers()
            names = [m.name for m in members]
            links = [m.name for m in members if not (m.isfile() or m.isdir())]
        else:
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        refuse(f"archive is corrupt or truncated: {exc}")
    escaping = [n for n in names if bad_name(n)]
    if escaping:
        refuse(f"archive member {escaping[0]!r} escapes the archive's folder")
    if links:
        refuse(f"archive member {links[0]!r} is a link or special file; only regular files are accepted")
