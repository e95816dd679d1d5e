"""What a sample file is, by its name: the one home of the rules that the estimator's image reader
(training/sources/images.py), the client's folder archiver (service/client/sources.py) and the
server's upload checks (service/server/storage.py) must agree on. Torch-free."""
from __future__ import annotations

from pathlib import PurePosixPath

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# what the server takes as an uploaded sample set (a local estimate also reads .tar.bz2/.tar.xz)
UPLOAD_SUFFIXES = (".npz", ".npy", ".zip", ".tar", ".tar.gz", ".tgz")


def skipped(part: str) -> bool:
    """A hidden file or folder (".*") or macOS's "__MACOSX" folder: never part of a sample set."""
    return part.startswith(".") or part == "__MACOSX"


def in_skipped(name: str) -> bool:
    """Whether a member name (``/`` or ``\\`` separated) lies in a skipped file or folder."""
    return any(skipped(part) for part in PurePosixPath(name.replace("\\", "/")).parts)


def is_image(name: str) -> bool:
    """A PNG/JPEG member of a set: an image suffix (any case), not hidden."""
    return name.lower().endswith(IMAGE_SUFFIXES) and not in_skipped(name)


def unreadable_image(where: str, exc: BaseException) -> str:
    """The error for an image PIL cannot open: where it is and PIL's reason, without the repr of the
    in-memory buffer PIL names when it is handed one ('cannot identify image file <_io.BytesIO ...>')."""
    return f"{where}: not a readable PNG/JPEG image ({str(exc).split(' <_io.')[0]})"
