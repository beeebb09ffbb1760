"""A sandbox's own disk: a size-limited tmpfs that holds everything the attempt writes.

The overlay's upper and work directories (or, in the copy modes, the whole workspace copy)
live on a tmpfs mounted under the sandbox's directory in the orchestrator's mount namespace,
so it outlives each command's private namespace, the host can read and write the layers
between commands, and writing past ``disk_mb`` fails with ENOSPC instead of filling the host's
disk. Mounting needs root (as the overlay does); without it only ``max_file_size_mb`` bounds
a single file, and the backend says so when it starts.

Costs measured on the 2-core development VM: mount + unmount of an empty tmpfs about 0.3 ms,
against about 10 ms for a fresh ext4 loop image (``mkfs`` ~3 ms, ``mount -o loop`` ~6 ms, plus
``umount``); XFS/ext4 project quotas need a filesystem mounted with ``prjquota``, which the
host's is not. The price of the tmpfs: what an attempt writes is held in memory, charged to the
sandbox's memory cgroup (whose limit is raised by ``disk_mb`` for it) and freed at close.
"""

from __future__ import annotations

import ctypes
import functools
import os
import tempfile
from pathlib import Path

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MNT_DETACH = 0x2
_FLAGS = MS_NOSUID | MS_NODEV


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc


def inodes_for(size_mb: int) -> int:
    """Files a disk of ``size_mb`` may hold (a tmpfs's default would be half the host's RAM pages)."""
    return max(16384, size_mb * 128)


def _options(size_bytes: int, inodes: int) -> bytes:
    return f"mode=0755,size={size_bytes},nr_inodes={inodes}".encode()


def _mount(path: Path, flags: int, options: bytes) -> None:
    if _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount a tmpfs on {path}: {os.strerror(err)}")


def mount(path: Path, size_mb: int | None) -> None:
    """Mount a tmpfs of ``size_mb`` on the directory ``path`` (None: tmpfs's default, half the
    RAM, until ``resize``; an unlimited tmpfs could not be limited later)."""
    _mount(path, _FLAGS, b"mode=0755" if size_mb is None else _options(size_mb << 20, inodes_for(size_mb)))


def resize(path: Path, extra_mb: int) -> None:
    """Limit the tmpfs at ``path`` to what it holds now plus ``extra_mb`` (and as many more files)."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    used_inodes = st.f_files - st.f_ffree if st.f_files else 0
    _mount(path, _FLAGS | MS_REMOUNT, _options(used + (extra_mb << 20), used_inodes + inodes_for(extra_mb)))


def unmount(path: Path) -> bool:
    """Detach the tmpfs at ``path`` (its memory is freed once nothing uses it); False if none was there."""
    return _libc().umount2(os.fsencode(path), MNT_DETACH) == 0


def full(path: Path) -> bool:
    """Whether the disk at ``path`` has no block or no file left."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this process may mount a tmpfs (probed once per process)."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory(prefix="fibreflow-disk-probe-") as tmp:
        try:
            mount(Path(tmp), 1)
        except OSError:
            return False
        unmount(Path(tmp))
    return True


__all__ = ["available", "full", "inodes_for", "mount", "resize", "unmount"]
