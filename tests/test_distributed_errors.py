"""The process-group timeout setting and the one-line error for a lost peer (kuaihl_rec/train/distributed.py);
the real thing (two hosts, a killed worker, a lost host) is tests/test_multihost.py."""

from __future__ import annotations

import datetime

import pytest
import torch.distributed as dist

from kuaihl_rec.apps.cli import error_line, exit_status
from kuaihl_rec.train import distributed as kd


def test_timeout_comes_from_the_environment_and_bad_values_are_refused(monkeypatch):
    monkeypatch.delenv(kd.TIMEOUT_ENV, raising=False)
    assert kd.dist_timeout() == datetime.timedelta(seconds=1800)
    monkeypatch.setenv(kd.TIMEOUT_ENV, "45.5")
    assert kd.dist_timeout() == datetime.timedelta(seconds=45.5)
    for bad in ("0", "-3", "ten", "nan"):
        monkeypatch.setenv(kd.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=f"KUAIHL_DIST_TIMEOUT_S='{bad}': expected a positive number"):
            kd.dist_timeout()


@pytest.fixture
def two_ranks(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setenv(kd.TIMEOUT_ENV, "20")


def test_backend_failures_become_one_clear_line(two_ranks):
    reset = RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error [10.213.0.2]:64701: Connection reset by peer."
                         "\nThis is typically caused by a remote worker hanging")
    lost = kd.peer_lost_error(reset, step=40)
    assert isinstance(lost, ConnectionError) and exit_status(lost) == 1
    line = error_line(lost)
    assert line.startswith("rank 1 of 2 lost contact with the other ranks after step 40 (RuntimeError: [gloo")
    assert "KUAIHL_DIST_TIMEOUT_S=20 s" in line and "--resume" in line and "\n" not in line
    # a checkpoint write that failed because the peer vanished: the cause is what counts
    try:
        try:
            raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 20000ms for send")
        except RuntimeError as exc:
            raise OSError("writing checkpoint step-00000040 failed; Is the disk full?") from exc
    except OSError as wrapped:
        assert "Timed out waiting" in str(kd.peer_lost_error(wrapped, step=40))
    assert "before the first step" in str(kd.peer_lost_error(dist.DistError("store gone"), step=0))


def test_other_errors_and_single_process_runs_are_left_alone(two_ranks, monkeypatch):
    assert kd.peer_lost_error(ValueError("bad config"), step=3) is None
    assert kd.peer_lost_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), step=3) is None
    assert kd.peer_lost_error(OSError("No space left on device"), step=3) is None
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 1)
    assert kd.peer_lost_error(RuntimeError("Connection reset by peer"), step=3) is None
