"""The caller key a server generates when no caller keys are configured.

    key, path = ensure_caller_key(data_dir)      # $AIGC_DATA_DIR/caller-key

With AIGC_AUTH=auto and no caller keys, callers on this machine are served
without a key and every other caller must send this one
(server/access/keys.py). It is created once, at the first start, and reused
by every later start and by every process that shares the folder (workers,
replicas on one volume): the file is written whole under a temporary name,
then linked to its final name, which - like O_EXCL - fails if the name
exists, so exactly one process wins and no process ever reads a half-written
file. Mode 0600: only the server's own user reads it. The key itself is never
logged; its path is.
"""

from __future__ import annotations

import os
import pathlib
import secrets

from server.access.keys import new_key

FILE_NAME = "caller-key"


def ensure_caller_key(data_dir: str | pathlib.Path) -> tuple[str, pathlib.Path]:
    """The key in `data_dir`/caller-key, created (mode 0600) if there is none yet."""
    folder = pathlib.Path(data_dir).absolute()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / FILE_NAME
    if not path.exists():
        # A random name: replicas in containers sharing the folder may all be pid 1.
        temporary = folder / f".{FILE_NAME}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (new_key() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = path.read_text().strip()
    if not key:
        raise OSError(f"{path} is empty: delete it, and a new key is generated at the next start")
    return key, path


__all__ = ["FILE_NAME", "ensure_caller_key"]
