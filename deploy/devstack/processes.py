"""Start a server process in its own session, wait until it is ready, stop all of it.

Each process gets a new session (so a Ctrl-C in the launcher's terminal does not
hit it, and a ``--detach``-ed stack outlives the launcher) and writes stdout and
stderr to a log file (the launcher's stdout stays clean).

Stopping is about leaving nothing behind. A process group is not enough to find
every descendant: PostgreSQL's children call ``setsid()`` themselves, so the
whole tree (descendants by parent pid, plus members of the leader's group) is
snapshotted before the leader is asked to stop, and anything of it still alive
afterwards gets SIGTERM, then SIGKILL. Processes are identified by pid *and*
start time (psutil checks both) so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 4000
# Straggler grace: how long leftovers get after SIGTERM before SIGKILL.
_STRAGGLER_GRACE_S = 3.0
_KILL_WAIT_S = 5.0
# psutil computes create_time from boot time + clock ticks; equal values compare equal
# across processes, the tolerance only absorbs float formatting.
_CREATE_TIME_TOLERANCE_S = 0.05


class StartupError(RuntimeError):
    """A managed process exited or did not become ready in time.

    ``exited`` tells "the process died" (e.g. its port was taken, which callers
    may retry) from "the process is up but never answered".
    """

    def __init__(self, message: str, *, name: str, log_path: Path, exited: bool) -> None:
        tail = log_tail(log_path)
        super().__init__(f"{message}\n--- last lines of {log_path} ---\n{tail}")
        self.name = name
        self.log_path = log_path
        self.exited = exited
        self.tail = tail


def log_tail(path: Path, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The end of a log file (at most ``max_bytes``), or a note that there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return "(no log file)"
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        # Drop the partial first line so the tail starts cleanly.
        text = text.partition("\n")[2]
    return text.rstrip() or "(log is empty)"


@dataclass(frozen=True)
class ProcessRecord:
    """What identifies a started process across launcher runs (stored in the state file)."""

    name: str
    pid: int
    pgid: int
    create_time: float
    log_path: str
    stop_signal: int = int(signal.SIGTERM)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            create_time=float(data["create_time"]),
            log_path=str(data["log_path"]),
            stop_signal=int(data.get("stop_signal", signal.SIGTERM)),
        )


class ManagedProcess:
    """A process this launcher started, possibly in an earlier run (see ``from_record``)."""

    def __init__(self, record: ProcessRecord, popen: subprocess.Popen[bytes] | None = None) -> None:
        self._record = record
        self._popen = popen
        self._log_offset = 0

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> ManagedProcess:
        """Start ``argv`` in a new session with stdout+stderr appended to ``log_path``.

        ``user`` drops privileges in the child (PostgreSQL refuses to run as root).
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            offset = log_file.tell()
            log.debug("starting %s: %s (log %s)", name, argv[0], log_path)
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                user=user,
                group=_primary_group(user) if user is not None else None,
                extra_groups=[] if user is not None else None,
            )
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0  # already gone; is_alive() relies on popen for our own children
        record = ProcessRecord(
            name=name,
            pid=popen.pid,
            pgid=popen.pid,  # start_new_session: the child leads its own group
            create_time=create_time,
            log_path=str(log_path),
            stop_signal=int(stop_signal),
        )
        proc = cls(record, popen)
        proc._log_offset = offset
        return proc

    @classmethod
    def from_record(cls, record: ProcessRecord) -> ManagedProcess:
        """A handle on a process started by another launcher run (no ``Popen`` to reap)."""
        return cls(record)

    # --- accessors --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def pid(self) -> int:
        return self._record.pid

    @property
    def pgid(self) -> int:
        return self._record.pgid

    @property
    def log_path(self) -> Path:
        return Path(self._record.log_path)

    @property
    def record(self) -> ProcessRecord:
        return self._record

    @property
    def returncode(self) -> int | None:
        """Exit status once known (only for processes started by this launcher run)."""
        return self._popen.poll() if self._popen is not None else None

    def new_log_text(self) -> str:
        """Log output written since this process was started (earlier runs excluded)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    # --- liveness ---------------------------------------------------------------------------

    def _leader(self) -> psutil.Process | None:
        """The leader if it is still this very process (same pid and start time)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self._record.create_time) > _CREATE_TIME_TOLERANCE_S:
                return None  # the pid was recycled
            return proc
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None

    def is_alive(self) -> bool:
        """Whether the leader process is running (a zombie counts as dead)."""
        if self._popen is not None:
            return self._popen.poll() is None
        proc = self._leader()
        if proc is None:
            return False
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def survivors(self) -> list[psutil.Process]:
        """Every live process of this tree: leader, its descendants, members of its group."""
        found: dict[int, psutil.Process] = {}
        leader = self._leader()
        if leader is not None:
            found[leader.pid] = leader
            with contextlib.suppress(psutil.Error):
                for child in leader.children(recursive=True):
                    found[child.pid] = child
        for member in self._group_members(leader):
            found.setdefault(member.pid, member)
        return [p for p in found.values() if _running(p)]

    def _group_members(self, leader: psutil.Process | None) -> list[psutil.Process]:
        """Members of the leader's process group, if that group is still ours.

        While any process is in group G, the kernel does not hand out pid G again;
        so if a process with pid G exists and is not our leader, G was recycled
        after our group emptied and its members are someone else's.
        """
        if leader is None and psutil.pid_exists(self.pgid):
            other = _safe_process(self.pgid)
            if other is not None and _running(other):
                return []
        members: list[psutil.Process] = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.pgid:
                    members.append(proc)
            except (ProcessLookupError, PermissionError):
                continue
        return members

    # --- readiness --------------------------------------------------------------------------

    def wait_ready(
        self,
        probe: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        interval: float = 0.1,
    ) -> None:
        """Poll ``probe`` until it returns True; raise ``StartupError`` on exit or timeout.

        Exceptions from ``probe`` mean "not ready yet"; the last one goes into the error.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            if not self.is_alive():
                raise StartupError(
                    f"{self.name} exited with status {self.returncode} before {what}",
                    name=self.name,
                    log_path=self.log_path,
                    exited=True,
                )
            try:
                if probe():
                    return
            except Exception as exc:  # any probe failure just means "not yet"
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last probe error: {last_error!r})" if last_error is not None else ""
                raise StartupError(
                    f"{self.name} (pid {self.pid}) not ready after {timeout:.0f}s: {what}{detail}",
                    name=self.name,
                    log_path=self.log_path,
                    exited=False,
                )
            time.sleep(interval)

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the leader to stop, wait ``timeout`` s, then make sure the whole tree is gone."""
        tree = self.survivors()
        leader = self._leader()
        if leader is not None and self.is_alive():
            sig = signal.Signals(self._record.stop_signal)
            log.debug("stopping %s (pid %d) with %s", self.name, self.pid, sig.name)
            with contextlib.suppress(psutil.NoSuchProcess):
                leader.send_signal(sig)
            if not self._wait_leader(timeout):
                log.warning(
                    "%s (pid %d) ignored %s for %.0fs; killing it",
                    self.name,
                    self.pid,
                    sig.name,
                    timeout,
                )
                with contextlib.suppress(psutil.NoSuchProcess):
                    leader.kill()
                self._wait_leader(_KILL_WAIT_S)
        self._reap()
        self._terminate_all(tree + self.survivors())

    def kill(self) -> None:
        """SIGKILL the whole tree at once, as a crash or OOM kill would."""
        tree = self.survivors()
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(tree, timeout=_KILL_WAIT_S)
        self._reap()

    def _wait_leader(self, timeout: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _reap(self) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(_KILL_WAIT_S)

    def _terminate_all(self, procs: list[psutil.Process]) -> None:
        alive = _unique_running(procs)
        if not alive:
            return
        log.debug("%s: %d leftover process(es), sending SIGTERM", self.name, len(alive))
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(alive, timeout=_STRAGGLER_GRACE_S)
        alive = _unique_running(alive)
        for proc in alive:
            log.warning("%s: killing leftover pid %d", self.name, proc.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=_KILL_WAIT_S)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _unique_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for proc in procs:
        if proc.pid not in seen and _running(proc):
            seen[proc.pid] = proc
    return list(seen.values())


def _safe_process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid
