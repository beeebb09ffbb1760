"""Which isolation the local backend can give here, and the bubblewrap arguments that give it.

Three modes, best first:

- ``bwrap+overlay``: bubblewrap namespaces over a kernel overlay mount of the repository (root);
- ``bwrap+copy``: bubblewrap over a plain copy (no overlay: not root, or the kernel lacks it);
- ``copy (REDUCED ISOLATION)``: a plain copy with rlimits/cgroups only, after a loud warning.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODE_OVERLAY = "bwrap+overlay"
MODE_BWRAP_COPY = "bwrap+copy"
MODE_COPY = "copy (REDUCED ISOLATION)"
MODES = (MODE_OVERLAY, MODE_BWRAP_COPY, MODE_COPY)

OVERLAY_OPTIONS = "lowerdir=lower,upperdir=disk/upper,workdir=disk/work,redirect_dir=off,metacopy=off,index=off,xino=off"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# /etc entries a toolchain needs; nothing that may hold secrets (no shadow, ssh, ssl/private, gitconfig)
_ETC = ("passwd", "group", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "localtime", "timezone",
        "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "mime.types", "protocols",
        "services", "os-release", "debian_version", "ssl/certs", "ssl/openssl.cnf", "ca-certificates",
        "ca-certificates.conf", "pki/tls/certs", "inputrc", "magic")
_ETC_NETWORK = ("resolv.conf",)  # harmless without a network: there is nothing to resolve with
_TOP_SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _system(path: str) -> bool:
    """A path under /usr, which every sandbox already sees read-only."""
    return path == "/usr" or path.startswith("/usr/")


def python_binds() -> list[tuple[str, str]]:
    """(host source, sandbox destination) of every interpreter tree a sandbox needs to run this
    Python: the venv and the base installation, each by its real path (a symlinked ``.venv`` or a
    ``bin/python`` symlink chain is resolved first, so what is bound is what the interpreter reads),
    and, where the venv's own path differs from its real one, the same tree again at that path, so
    scripts whose ``#!`` names the link keep working."""
    real_exe = os.path.realpath(sys.executable) if sys.executable else ""
    trees = [sys.prefix, sys.base_prefix]
    if real_exe:  # a bin/python chain may end outside both prefixes
        trees.append(os.path.dirname(os.path.dirname(real_exe)))
    binds: list[tuple[str, str]] = []
    seen: set[str] = set()
    for tree in trees:
        real = os.path.realpath(tree)
        if _system(real) or real in seen or any(real.startswith(d + "/") for d in seen):
            continue
        seen.add(real)
        binds.append((real, real))
    alias = os.path.abspath(sys.prefix)
    real_prefix = os.path.realpath(sys.prefix)
    if alias != real_prefix and not _system(alias) and not _system(real_prefix) and alias not in seen:
        binds.append((real_prefix, alias))
    return binds


def python_dirs() -> list[str]:
    """The interpreter trees a sandbox sees, at the paths it sees them (see ``python_binds``)."""
    return [dest for _, dest in python_binds()]


def python_args() -> list[str]:
    """bwrap binds of the interpreter trees; they go after the private /tmp is mounted, since a
    checkout (and so its .venv) may live under /tmp and the tmpfs would hide it."""
    return [arg for source, dest in python_binds() for arg in ("--ro-bind", source, dest)]


def python_bin() -> str:
    """The directory of this interpreter's ``python``, first on the sandbox's PATH: the venv's
    ``bin`` by its real path, which ``python_binds`` always mounts (the link path may not be)."""
    return os.path.join(os.path.realpath(sys.prefix), "bin")


def _etc_entries() -> list[tuple[str, str, bytes]]:
    """(relative path, kind, content) of every /etc entry a sandbox gets, in a stable order."""
    found: list[tuple[str, str, bytes]] = []

    def add(rel: str) -> None:
        path = os.path.join("/etc", rel)
        real = os.path.realpath(path)
        # a link into /run or elsewhere (e.g. systemd's resolv.conf) would dangle inside: copy its content
        if os.path.islink(path) and real.startswith(("/etc/", "/usr/")):
            found.append((rel, "link", os.readlink(path).encode()))
        elif os.path.isdir(path):
            found.append((rel, "dir", b""))
            for child in sorted(os.listdir(path)):
                add(os.path.join(rel, child))
        elif os.path.isfile(path):
            try:
                with open(path, "rb") as fh:
                    found.append((rel, "file", fh.read()))
            except OSError:  # unreadable here: not meant for a sandbox either
                pass

    for name in _ETC + _ETC_NETWORK:
        add(name)
    return found


def prepare_etc(root: Path) -> Path:
    """A minimal /etc, built once per content under ``root`` and bound as one read-only mount."""
    entries = _etc_entries()
    digest = hashlib.sha256()
    for rel, kind, content in entries:
        digest.update(f"{rel}\0{kind}\0{len(content)}\0".encode() + content)
    target = root / f"etc-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".etc-", dir=root))
    try:
        for rel, kind, content in entries:
            dest = building / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if kind == "link":
                os.symlink(content.decode(), dest)
            elif kind == "dir":
                dest.mkdir(exist_ok=True)
            else:
                dest.write_bytes(content)
                dest.chmod(0o644)
        building.chmod(0o755)
        os.rename(building, target)
    except OSError:
        if not target.is_dir():  # lost a race with another process: theirs is identical
            raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=8)
def system_args(network: bool, etc: Path | None = None) -> tuple[str, ...]:
    """bwrap arguments for namespaces and read-only system paths; the same for every sandbox.

    ``etc`` is a directory from ``prepare_etc`` (one mount instead of one per file).
    """
    args = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--hostname", "sandbox"]
    if network:
        args.append("--share-net")
    if os.geteuid() == 0:  # bwrap keeps every capability for root unless told otherwise
        args += ["--cap-drop", "ALL"]
    for top in _TOP_SYSTEM:
        path = "/" + top
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    if etc is not None:
        args += ["--ro-bind", str(etc), "/etc"]
    else:
        for name in _ETC + _ETC_NETWORK:
            if os.path.exists("/etc/" + name):
                args += ["--ro-bind", "/etc/" + name, "/etc/" + name]
    # bwrap leaves /proc/sys writable when the directory itself is mode 0555; uid 0 inside maps
    # to the host's root, so global sysctls must be read-only
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
             "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger", "--dev", "/dev"]
    return tuple(args)


def _run_quiet(argv: list[str], cwd: str | None = None) -> bool:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, timeout=20,
                              env={"PATH": HOST_PATH}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _overlay_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return False
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            return False
    except OSError:
        return False
    with tempfile.TemporaryDirectory(prefix="fibreflow-probe-") as tmp:
        for name in ("repo", "disk", "disk/upper", "disk/work", "merged"):
            os.mkdir(os.path.join(tmp, name))
        os.symlink(os.path.join(tmp, "repo"), os.path.join(tmp, "lower"))
        return _run_quiet(["unshare", "-m", "--propagation", "private", "mount", "-t", "overlay",
                           "overlay", "-o", OVERLAY_OPTIONS, "merged"], cwd=tmp)


def _bwrap_works() -> bool:
    bwrap = shutil.which("bwrap")
    return bwrap is not None and _run_quiet([bwrap, *system_args(False), "--remount-ro", "/", "true"])


@functools.lru_cache(maxsize=1)
def isolation_mode() -> str:
    """The best mode this machine supports (probed once per process)."""
    if not _bwrap_works():
        return MODE_COPY
    return MODE_OVERLAY if _overlay_works() else MODE_BWRAP_COPY
