"""Every ``kuaihl`` command answers a bad input with one line and an exit status, never a traceback.

Usage errors (a bad flag, ``--set`` key or value, name, preset, split, a missing input) exit 2;
data that cannot be used exits 1; ``-v`` adds the traceback. Config errors are found before any
data is read or directory made. Run in-process (``main([...])``), except two subprocess checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuaihl_rec.apps.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def where(tmp_path, monkeypatch):
    """A scratch directory holding a file, an empty directory and a junk Parquet file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.parquet").write_text("junk")
    return tmp_path


def _run(argv, capsys):
    """(exit status, stderr) of ``kuaihl argv`` run in-process; argparse's own exits included."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


# (argv, exit status, words the one line must contain)
USAGE = [
    (["world", "--preset", "nope", "--out", "o"], 2, ["nope", "preset"]),
    (["world", "--set", "content_signal=abc", "--out", "o"], 2, ["content_signal", "number"]),
    (["world", "--set", "no_such=1", "--out", "o"], 2, ["no_such"]),
    (["world", "--set", "content_signal", "--out", "o"], 2, ["--set", "key=value"]),
    (["world", "--config", "missing.yaml", "--out", "o"], 2, ["missing.yaml"]),
    (["world", "--preset", "tiny", "--out", "afile/o"], 2, ["--out", "afile"]),
    (["validate", "missing"], 2, ["missing", "segment table"]),
    (["validate", "empty", "--min-viewers", "-1"], 2, ["--min-viewers"]),
    (["klive", "missing", "--out", "o"], 2, ["missing", "KLive"]),
    (["extract", "missing", "--out", "o"], 2, ["missing", "INPUT"]),
    (["extract", "empty", "--out", "o", "--preset", "nope"], 2, ["nope", "encoder preset"]),
    (["extract", "empty", "--out", "o", "--vision-checkpoint", "no.pth"], 2, ["no.pth"]),
    (["extract", "empty", "--out", "o", "--batch-size", "0"], 2, ["--batch-size"]),
    (["extract", "empty", "--out", "o", "--device", "tpu"], 2, ["--device", "tpu", "cuda:N"]),
    (["train", "content", "--data", "missing", "--out", "o", "--set", "epochs=abc"], 2, ["epochs", "integer"]),
    (["train", "content", "--data", "missing", "--out", "o", "--set", "optim.lr=fast"], 2, ["optim.lr", "number"]),
    (["train", "content", "--data", "missing", "--out", "o", "--set", "no_such=1"], 2, ["no_such"]),
    (["train", "content", "--data", "missing", "--out", "o", "--set", "epochs=0"], 2, ["epochs"]),
    (["train", "content", "--data", "missing", "--out", "o", "--set", "model.nope=3"], 2, ["nope", "content"]),
    (["train", "no_such_model", "--data", "missing", "--out", "o"], 2, ["no_such_model", "kuaihl models"]),
    (["train", "content", "--data", "missing", "--out", "o", "--preset", "nope"], 2, ["nope", "training preset"]),
    (["train", "content", "--data", "missing", "--out", "o", "--loss", "nope"], 2, ["--loss", "nope"]),
    (["train", "content", "--data", "missing", "--out", "o"], 2, ["--data", "missing"]),
    (["train", "content", "--data", "empty", "--out", "o", "--resume"], 2, ["--resume", "o"]),
    (["train", "content", "--data", "empty", "--out", "afile"], 2, ["--out", "afile"]),
    (["train", "content", "--data", "empty", "--out", "o", "--resume", "--overwrite"], 2, ["--resume", "--overwrite"]),
    (["eval", "empty", "--data", "empty", "--split", "validation"], 2, ["validation", "train, val, test"]),
    (["eval", "missing", "--data", "empty"], 2, ["missing", "RUN"]),
    (["eval", "empty", "--data", "empty"], 2, ["model.pt"]),
    (["compare", "--data", "empty", "--out", "o", "--jobs", "0"], 2, ["--jobs", ">= 1"]),
    (["compare", "--data", "empty", "--out", "o", "--seeds", "0"], 2, ["--seeds"]),
    (["compare", "--data", "empty", "--out", "o", "--lr-grid", "a,b"], 2, ["--lr-grid", "a,b"]),
    (["compare", "--data", "empty", "--out", "o", "--models", "no_such_model"], 2, ["no_such_model"]),
    (["compare", "--data", "missing", "--out", "o"], 2, ["--data", "missing"]),
    (["ab", "--world", "empty", "--out", "o", "--days", "abc"], 2, ["--days", "abc"]),
    (["ab", "--world", "empty", "--out", "o", "--days", "0"], 2, ["--days"]),
    (["ab", "--world", "empty", "--out", "o", "--users", "0"], 2, ["--users"]),
    (["ab", "--world", "missing", "--out", "o"], 2, ["--world", "missing"]),
    (["ab", "--world", "empty", "--out", "o", "--config", "arms.yaml"], 2, ["--config", "arms.yaml"]),
    (["ope", "--logs", "missing", "--out", "o"], 2, ["--logs", "missing"]),
    (["ope", "--logs", "empty", "--out", "o", "--temperature", "1"], 2, ["impressions.parquet"]),
    (["ope", "--world", "empty", "--out", "o", "--temperature", "0"], 2, ["--temperature"]),
    (["ope", "--world", "empty", "--out", "o", "--click-model", "nope"], 2, ["nope", "click model"]),
    (["replay", "missing", "--world", "empty", "--out", "o"], 2, ["missing", "RUN"]),
    (["replay", "empty", "--world", "empty", "--out", "o", "--split", "validation"], 2, ["--split", "validation"]),
    (["replay", "empty", "--world", "empty", "--out", "o", "--max-batch", "0"], 2, ["--max-batch"]),
    (["replay", "empty", "--world", "empty", "--out", "o"], 2, ["vocab.npz"]),
    (["export", "missing", "--out", "o"], 2, ["missing", "RUN"]),
    (["export", "empty", "--out", "o", "--no-aoti"], 2, ["vocab.npz"]),
    (["models", "--bogus"], 2, ["--bogus"]),
    (["demo", "--preset", "nope", "--out", "o", "--quick"], 2, ["nope", "preset"]),
    (["demo", "--users", "0", "--out", "o", "--quick"], 2, ["--users"]),
    (["demo", "--out", "afile/o", "--quick"], 2, ["--out", "afile"]),
    (["phd", "--out", "o", "--seeds", "0"], 2, ["--seeds"]),
    (["phd", "--out", "o", "--models", "no_such_row"], 2, ["no_such_row"]),
    (["nosuchcommand"], 2, ["nosuchcommand"]),
    (["plan", "--streamers", "0", "--world-size", "8"], 2, ["--streamers"]),
]

DATA = [
    (["validate", "junk.parquet"], 1, ["junk.parquet", "Parquet"]),
    (["validate", "empty"], 1, ["empty"]),
    (["klive", "empty", "--out", "o"], 1, ["live_id2aid.txt"]),
    (["plan", "--streamers", "10000000", "--world-size", "8", "--compute-device", "cpu", "--ddr-gib", "2"], 1,
     ["do not fit", "needs at least 12 ranks"]),
]


@pytest.mark.parametrize("argv,status,words", USAGE + DATA, ids=[" ".join(argv) for argv, _, _ in USAGE + DATA])
def test_a_bad_input_is_one_line_and_an_exit_status(argv, status, words, where, capsys):
    got, err = _run(argv, capsys)
    assert got == status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1]
    if not last.startswith("kuaihl: error:"):  # ours, not argparse's usage block
        assert len(lines) == 1 and last.startswith(f"kuaihl {argv[0]}: "), err
    for word in words:
        assert word in last, (word, err)
    if argv[0] in ("world", "train", "compare", "ab", "replay", "export", "demo") and status == 2:
        assert not (where / "o").exists(), "a usage error made the output directory"


def test_extract_on_cuda_without_a_gpu_is_one_line(where, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --device cuda is valid here")
    status, err = _run(["extract", "empty", "--out", "o", "--device", "cuda"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "--device cuda" in err and "no CUDA device" in err


def test_every_subcommand_is_covered():
    from kuaihl_rec.apps.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= {argv[0] for argv, _, _ in USAGE + DATA}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_an_unwritable_out_is_one_line_naming_it(where, capsys):
    locked = where / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status, err = _run(["world", "--preset", "tiny", "--out", str(locked / "w")], capsys)
    finally:
        locked.chmod(0o755)
    assert status == 2 and "Traceback" not in err and str(locked / "w") in err and "not writable" in err


def test_verbose_shows_the_traceback(where, capsys):
    status, err = _run(["-v", "train", "content", "--data", "missing", "--out", "o", "--set", "epochs=abc"], capsys)
    assert status == 2
    assert "Traceback" in err and "UsageError" in err
    assert err.strip().splitlines()[-1] == "kuaihl train: --set epochs='abc': epochs expects an integer"


def test_a_failed_write_is_one_line_naming_the_path():
    from kuaihl_rec.apps.cli import error_line, exit_status

    denied = PermissionError(13, "Permission denied", "/runs/locked/model.pt")
    assert exit_status(denied) == 1 and error_line(denied) == "/runs/locked/model.pt: Permission denied"
    assert exit_status(FileNotFoundError(2, "No such file or directory", "x.yaml")) == 2
    assert exit_status(KeyError("a bug")) is None


def test_a_bug_is_not_hidden(where, capsys, monkeypatch):
    """Only input errors become one line: an unexpected exception keeps its traceback."""
    from kuaihl_rec.apps import commands

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands, "cmd_models", broken)
    monkeypatch.setattr("kuaihl_rec.apps.cli.cmd_models", broken)
    with pytest.raises(ZeroDivisionError):
        main(["models"])


def test_a_usage_error_in_a_fresh_process(tmp_path):
    """The installed entry point's path: exit status 2, one line, nothing made, no torch for --help."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "kuaihl_rec.apps.cli", "ab", "--world", str(tmp_path), "--out",
           str(tmp_path / "o"), "--days", "soon"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "kuaihl ab: --days 'soon': expected 'auto', 'none' or an integer >= 1"
    assert not (tmp_path / "o").exists()
    probe = "import sys; from kuaihl_rec.apps.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    help_only = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert help_only.stdout.strip() == "False", help_only.stderr
