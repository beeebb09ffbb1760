"""Runs many candidate programs against many test inputs in one process tree (stdlib only).

This file is copied into a sandbox and run there as ``python3 _harness.py JOB.json OUT.jsonl``; it
must not import fibreflow. Each candidate runs in a forked child with rlimits and a per-call timer, and
streams one JSON line per result, so a child that has to be killed loses only what it had not
reported yet. At most ``workers`` children run at once. Output: one JSON line per result in OUT,
``{"t": task, "c": candidate, "k": kind, "i": index, "v": value}`` (a file, not stdout, whose
capture a sandbox may cut).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import selectors
import signal
import sys
import time

TIMEOUT = "!Timeout"


class _CallTimeout(BaseException):
    """Raised by the timer; a BaseException so a candidate's ``except Exception`` cannot swallow it."""


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _CallTimeout()


def _timed(fn, seconds):
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _signature(value):
    try:
        text = repr(value)
    except BaseException as exc:  # noqa: BLE001 - a broken __repr__ is still an observable outcome
        text = "!repr:" + type(exc).__name__
    if len(text) > 64:
        text = "#" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]
    return text


def _child(task, cand, program, job, emit):
    signal.signal(signal.SIGALRM, _on_alarm)
    mem = int(job.get("memory_mb", 512)) * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    except (ValueError, OSError):
        pass
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    call_t = float(job.get("call_timeout", 0.5))
    ns = {"__name__": "__candidate__"}
    try:
        _timed(lambda: exec(compile(program, "candidate.py", "exec"), ns), float(job.get("load_timeout", 2.0)))
        emit("load", 0, None)
    except _CallTimeout:
        emit("load", 0, TIMEOUT)
        return
    except BaseException as exc:  # noqa: BLE001 - any failure to load is a result
        emit("load", 0, "!" + type(exc).__name__)
        return
    hidden = task.get("hidden")
    if hidden:
        def check():
            hns = dict(ns)
            exec(compile(hidden["test"], "hidden_test.py", "exec"), hns)
            hns["check"](ns[hidden["entry_point"]])
        try:
            _timed(check, float(job.get("hidden_timeout", 3.0)))
            emit("hidden", 0, True)
        except BaseException:  # noqa: BLE001
            emit("hidden", 0, False)
    deadline = time.monotonic() + float(job.get("candidate_budget", 4.0))
    timeouts = 0
    max_timeouts = int(job.get("max_timeouts", 3))
    memo = {}

    def run(src, mode, budgeted=True):
        nonlocal timeouts
        if budgeted and (timeouts >= max_timeouts or time.monotonic() > deadline):
            return TIMEOUT, None
        try:
            value = _timed(lambda: eval(compile(src, "call.py", mode), dict(ns)), call_t)
            return None, value
        except _CallTimeout:
            timeouts += 1
            return TIMEOUT, None
        except BaseException as exc:  # noqa: BLE001
            return "!" + type(exc).__name__, None

    for i, src in enumerate(task.get("inputs", [])):
        err, value = run(src, "eval")
        memo[src] = (err, value)
        emit("out", i, err if err else _signature(value))
    for i, test in enumerate(task.get("tests", [])):
        call, expected = test.get("call"), test.get("expected")
        if call is not None and expected is not None and call in memo:
            err, value = memo[call]
            if err:
                emit("test", i, False)
                continue
            e_err, e_value = run(expected, "eval", budgeted=False)  # a literal: never held to the budget
            try:
                ok = not e_err and _timed(lambda: bool(value == e_value), call_t)  # noqa: B023
            except BaseException:  # noqa: BLE001
                ok = False
            emit("test", i, ok)
        else:
            err, _ = run(test["src"], "exec")
            emit("test", i, err is None)


def _start(task, cand, program, job):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        out = os.fdopen(write_fd, "w", buffering=1)

        def emit(kind, index, value):
            out.write(json.dumps({"t": task["key"], "c": cand, "k": kind, "i": index, "v": value}) + "\n")

        try:
            _child(task, cand, program, job, emit)
            out.flush()
        finally:
            os._exit(0)
    os.close(write_fd)
    return pid, read_fd


def main(job_path, out_path):
    with open(job_path) as fh:
        job = json.load(fh)
    with open(out_path, "w") as out:
        _run_all(job, out)


def _run_all(job, out):
    work = [(task, cand, prog) for task in job["tasks"] for cand, prog in task["programs"].items()]
    workers = max(1, int(job.get("workers", 2)))
    limit = (float(job.get("load_timeout", 2.0)) + float(job.get("hidden_timeout", 3.0))
             + float(job.get("candidate_budget", 4.0)) + 2.0)
    sel = selectors.DefaultSelector()
    active = {}
    while work or active:
        while work and len(active) < workers:
            task, cand, prog = work.pop(0)
            pid, fd = _start(task, cand, prog, job)
            active[fd] = (pid, time.monotonic() + limit, b"")
            sel.register(fd, selectors.EVENT_READ)
        wait = max(0.0, min(d for _, d, _ in active.values()) - time.monotonic())
        for key, _ in sel.select(timeout=wait):
            fd = key.fd
            pid, deadline, buf = active[fd]
            chunk = os.read(fd, 65536)
            if chunk:
                buf += chunk
                lines = buf.split(b"\n")
                for line in lines[:-1]:
                    out.write(line.decode("utf-8", "replace") + "\n")
                active[fd] = (pid, deadline, lines[-1])
            else:
                _finish(sel, active, fd)
        now = time.monotonic()
        for fd, (pid, deadline, _) in list(active.items()):
            if now > deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _finish(sel, active, fd)
    out.flush()


def _finish(sel, active, fd):
    pid, _, _ = active.pop(fd)
    sel.unregister(fd)
    os.close(fd)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
