"""Fetch a file over HTTP with a progress bar, a timeout and an MD5 check, writing atomically."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from zoo.progress import phase

TIMEOUT_SECONDS = 30


def download(url: str, dest: Path, md5: str | None = None) -> None:
    """Download `url` to `dest`; raise OSError (incl. URLError) or ValueError on a bad MD5.

    The file appears at `dest` only once complete and verified, so an interrupted download
    never leaves a partial file behind under the real name.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with phase(f"downloading {dest.name}", total=total, unit="bytes") as advance:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
        if md5 is not None and digest.hexdigest() != md5:
            raise ValueError(
                f"{url} downloaded with MD5 {digest.hexdigest()}, expected {md5}; try again later."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
