"""Two "hosts" on one machine for multi-host tests: two network namespaces joined by a veth pair.

Host ``i`` lives in namespace ``kuaihl-t-<pid>-<n>-h<i>`` with its loopback up and one end of the
pair (``khv<pid>a`` / ``khv<pid>b``) holding ``10.213.<x>.1/30`` (host 0) or ``10.213.<x>.2/30``
(host 1); traffic flows only between these two addresses. Needs root and ``ip netns``.

:func:`two_hosts` creates them and removes them (killing what still runs inside) whatever happens;
:func:`remove_leftovers` deletes namespaces of earlier test processes that died before cleaning
up (the pid in the name no longer runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import re
import shutil
import signal
import subprocess
from typing import Iterator, List, Optional, Sequence

PREFIX = "kuaihl-t-"
_COUNTER = itertools.count()


def netns_unavailable() -> Optional[str]:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces and a veth pair)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    name = f"{PREFIX}{os.getpid()}-probe-h0"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"`ip netns add` is unavailable here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return None


def _ip(*args: str, ns: Optional[str] = None) -> None:
    cmd = (["ip", "netns", "exec", ns, "ip"] if ns else ["ip"]) + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


@dataclasses.dataclass
class Host:
    ns: str
    ifname: str
    addr: str
    procs: List[subprocess.Popen] = dataclasses.field(default_factory=list)

    def popen(self, argv: Sequence[str], env: dict, **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside this host's namespace in a new session (so it can be killed as a group)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], env=env, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def pids(self) -> List[int]:
        """Every process running in this namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def link(self, up: bool) -> None:
        """Bring this host's network interface up or down (down: the host vanishes from the network)."""
        _ip("link", "set", self.ifname, "up" if up else "down", ns=self.ns)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _delete(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def remove_leftovers() -> List[str]:
    """Delete this helper's namespaces whose creating process is gone; returns their names."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.match(rf"{PREFIX}(\d+)-(\d+|probe)-h\d$", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _delete(name)
            removed.append(name)
    return removed


@contextlib.contextmanager
def two_hosts() -> Iterator[List[Host]]:
    """Two namespaces joined by a veth pair (see the module docstring); removed on exit."""
    n = next(_COUNTER)
    pid = os.getpid()
    base = f"{PREFIX}{pid}-{n}"
    hosts = [
        Host(ns=f"{base}-h0", ifname=f"khv{pid % 100000}{n % 10}a", addr=f"10.213.{n % 250}.1"),
        Host(ns=f"{base}-h1", ifname=f"khv{pid % 100000}{n % 10}b", addr=f"10.213.{n % 250}.2"),
    ]
    try:
        for h in hosts:
            subprocess.run(["ip", "netns", "add", h.ns], check=True, capture_output=True, timeout=30)
            _ip("link", "set", "lo", "up", ns=h.ns)
        _ip("link", "add", hosts[0].ifname, "type", "veth", "peer", "name", hosts[1].ifname)
        for h in hosts:
            _ip("link", "set", h.ifname, "netns", h.ns)
            _ip("addr", "add", f"{h.addr}/30", "dev", h.ifname, ns=h.ns)
            h.link(up=True)
        yield hosts
    finally:
        for h in hosts:
            h.kill_all()
        for h in hosts:
            _delete(h.ns)
        # the pair goes with its namespaces; if creation failed half-way it may still be in ours
        subprocess.run(["ip", "link", "del", hosts[0].ifname], capture_output=True, timeout=30)
