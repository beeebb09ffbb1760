"""Jupyter kernels for reports: the right interpreter, and a wall-clock limit that cannot hang.

A report must run in this interpreter (the venv with fibreflow installed). The ``python3``
kernelspec usually guarantees that: ipykernel installs it into the venv with ``argv[0] ==
"python"``, which jupyter_client replaces by ``sys.executable``. A ``python3`` spec of another
interpreter found first on the Jupyter path (e.g. in ``~/.local/share/jupyter``) would not, so
``resolve_kernel`` then installs a spec named after this venv into its prefix and uses that.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from fibreflow.errors import ConfigError, ReportError

# jupyter_client launches these argv[0] values as sys.executable (KernelManager.format_kernel_cmd).
_SELF_ALIASES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


def runs_this_interpreter(argv0: str) -> bool:
    """Whether a kernelspec's ``argv[0]`` starts this interpreter (symlinks are not followed: a venv's
    python links to the system one but has other packages)."""
    return argv0 in _SELF_ALIASES or os.path.abspath(argv0) == os.path.abspath(sys.executable)


def venv_kernel_name() -> str:
    """The name of the kernelspec ``resolve_kernel`` installs for this interpreter."""
    return "fibreflow-" + hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]


def resolve_kernel(kernel_name: str | None = None, *, prefix: str | Path | None = None) -> str:
    """The kernel to run reports with: ``kernel_name`` if given, else one of this interpreter.

    Installs a kernelspec into ``prefix`` (default ``sys.prefix``) when ``python3`` resolves to
    another interpreter.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    if kernel_name:
        known = ksm.find_kernel_specs()
        if kernel_name not in known:
            raise ConfigError(f"unknown Jupyter kernel '{kernel_name}'; installed: {', '.join(sorted(known))}",
                              key="kernel_name")
        return kernel_name
    for name in ("python3", venv_kernel_name()):
        try:
            if runs_this_interpreter(ksm.get_kernel_spec(name).argv[0]):
                return name
        except NoSuchKernel:
            continue
    from ipykernel.kernelspec import install

    name = venv_kernel_name()
    install(kernel_name=name, display_name=f"Python (fibreflow, {sys.prefix})",
            prefix=str(prefix or sys.prefix))
    spec = KernelSpecManager().get_kernel_spec(name)
    if not runs_this_interpreter(spec.argv[0]):
        raise ReportError(f"kernelspec '{name}' at {spec.resource_dir} starts {spec.argv[0]}, not "
                          f"{sys.executable}; remove it or pass kernel_name")
    return name


class KernelWatchdog:
    """Kills a kernel's process group when ``timeout_s`` of wall-clock time have passed.

    Per-cell timeouts miss a kernel that hangs while starting or many cells that are each just
    under the limit. Pass ``manager_class`` as nbclient's ``kernel_manager_class``; nbclient then
    sees the dead kernel within a second and raises, and ``fired`` tells why.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.fired = threading.Event()
        self._done = threading.Event()
        self._managers: list[Any] = []
        self._thread = threading.Thread(target=self._watch, name="fibreflow-kernel-watchdog", daemon=True)
        self.manager_class = self._make_manager_class()

    def _make_manager_class(self) -> type:
        from jupyter_client.manager import AsyncKernelManager

        managers = self._managers

        class WatchedKernelManager(AsyncKernelManager):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                managers.append(self)

        return WatchedKernelManager

    def _watch(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        self.fired.set()
        while not self._done.is_set():  # the kernel may still be starting: retry until it can be killed
            if self._kill():
                return
            self._done.wait(0.2)

    def _kill(self) -> bool:
        killed = False
        for km in self._managers:
            provisioner = getattr(km, "provisioner", None)
            pid = getattr(provisioner, "pid", None)
            if not pid:
                continue
            pgid = getattr(provisioner, "pgid", None)
            try:
                # jupyter_client starts kernels in their own session; never signal our own group
                if pgid and pgid != os.getpgrp():
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            killed = True
        return killed

    def __enter__(self) -> KernelWatchdog:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=5)
