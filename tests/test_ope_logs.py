"""The logged-data format (ranking/ope/schema.py): a log round-trips, and a log that cannot be evaluated is
refused by ``kuaihl ope`` with one line naming the file, the row and the field (exit 1), before any estimate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kuaihl_rec.apps.cli import main
from kuaihl_rec.data.io import DataError
from ranking.ope.schema import IMPRESSIONS_FILE, read_logs, write_logs


def _log():
    """Three requests of lists of 2 from 3 candidates (propensities of a real PL policy are not needed here)."""
    imp = pd.DataFrame({"request_id": [1, 1, 2, 2, 3, 3], "session_id": [5, 5, 5, 5, 6, 6],
                        "position": [0, 1, 0, 1, 0, 1], "item_id": [10, 11, 12, 10, 11, 12],
                        "propensity": [0.5, 0.3, 0.4, 0.3, 0.2, 0.5], "click": [0, 1, 0, 0, 1, 0],
                        "watch_s": [0.0, 75.0, 0.0, 0.0, 12.0, 0.0],
                        "prefix_propensity": [0.5, 0.25, 0.4, 0.2, 0.2, 0.1]})
    cand = pd.DataFrame({"request_id": np.repeat([1, 2, 3], 3), "item_id": [10, 11, 12] * 3,
                         "ctr": np.linspace(0.1, 0.9, 9), "lvtr": np.linspace(0.5, 0.2, 9)})
    return imp, cand


def test_a_log_round_trips(tmp_path):
    imp, cand = _log()
    write_logs(tmp_path / "logs", imp.sample(frac=1.0, random_state=0), cand, {"source": "hand-made"})
    data = read_logs(tmp_path / "logs")
    pd.testing.assert_frame_equal(data.impressions.reset_index(drop=True), imp.astype({"position": np.int64,
                                                                                     "click": np.int64}))
    assert list(data.term_columns) == ["ctr", "lvtr"] and data.meta == {"source": "hand-made"} and data.has_prefix


def _set(column, row, value, table=0):
    """A mutation of the hand-made log: ``column`` of ``row`` set to ``value`` in the impressions (or candidates)."""
    def mutate(imp, cand):
        frame = (imp, cand)[table]
        frame[column] = frame[column].astype("float64" if isinstance(value, float) else frame[column].dtype)
        frame.loc[row, column] = value
    return mutate


BAD = {
    "propensity_zero": (_set("propensity", 3, 0.0), "row 3: propensity = 0.0; expected a probability in (0, 1]"),
    "propensity_above_one": (_set("propensity", 4, 1.5), "row 4: propensity = 1.5"),
    "missing_position": (_set("position", 5, 2),
                         "request_id 3 has positions [0, 2]; expected positions 0..1 (missing positions)"),
    "duplicate_impression": (_set("position", 1, 0),
                             "row 1: position = 0; expected one impression per (request_id, position): duplicate"),
    "same_item_twice": (_set("item_id", 1, 10),
                        "row 1: item_id = 10; expected each item once per request: duplicate impression"),
    "null_click": (_set("click", 2, np.nan), "row 2: click = nan; expected a value (no nulls)"),
    "negative_watch": (_set("watch_s", 0, -1.0), "row 0: watch_s = -1.0; expected seconds >= 0"),
    "prefix_grows": (_set("prefix_propensity", 1, 0.6), "row 1: prefix_propensity = 0.6"),
    "no_candidate_row": (_set("item_id", 5, 99, table=1), "no candidate row for the shown item_id 12 of request_id 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_logs_are_refused_with_file_row_and_field(case, tmp_path, capsys):
    imp, cand = _log()
    BAD[case][0](imp, cand)
    logs = tmp_path / "logs"
    logs.mkdir()
    imp.to_parquet(logs / "impressions.parquet")
    cand.to_parquet(logs / "candidates.parquet")
    (logs / "log.json").write_text(json.dumps({"logging": {"temperature": 0.5}}))
    with pytest.raises(DataError, match="parquet"):
        read_logs(logs)
    status = main(["ope", "--logs", str(logs), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("kuaihl ope: ") and BAD[case][1] in err, err
    assert not (tmp_path / "out" / "ope.json").exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["ope", "--logs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "--logs" in capsys.readouterr().err
    imp, cand = _log()
    write_logs(tmp_path / "logs", imp, cand, {})
    assert main(["ope", "--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "o"), "--temperature", "0"]) == 2
    assert "--temperature expects a number > 0" in capsys.readouterr().err
    # no temperature anywhere: the log's log.json names none
    assert main(["ope", "--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "o")]) == 1
    assert "names no policy temperature" in capsys.readouterr().err
    (tmp_path / "logs" / IMPRESSIONS_FILE).write_text("junk")
    assert main(["ope", "--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "o"), "--temperature", "1"]) == 1
    assert "not a readable Parquet file" in capsys.readouterr().err


def test_kuaihl_ope_on_a_hand_made_log(tmp_path, capsys):
    imp, cand = _log()
    write_logs(tmp_path / "logs", imp, cand, {"logging": {"temperature": 0.5}})
    status = main(["ope", "--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "out"), "--n-boot", "50", "-q"])
    assert status == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "ope.json").read_text())
    assert set(result["policies"]) == {"control"}  # the built-in config: control = ctr + lvtr
    estimates = result["policies"]["control"]["rewards"]["click"]["estimates"]
    assert set(estimates) == {"dm", "ips", "snips", "iips", "rips", "dr"}
    # 3 requests: every weight family's effective sample size is far below 100, so every weighted estimate is
    # flagged (the direct method uses no weights)
    assert {k: e["trustworthy"] for k, e in estimates.items()} == {"dm": None, "ips": False, "snips": False,
                                                                   "iips": False, "rips": False, "dr": False}
    assert "WARNING slate weights untrustworthy (effective sample size" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Off-policy evaluation")
    assert not (tmp_path / "out" / "figures").exists()  # no truth, no estimate-vs-truth figure


def _strict(text):
    def refuse(token):
        raise AssertionError(f"non-strict JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


def test_a_log_without_clicks_gives_strict_json_and_no_lift(tmp_path, capsys):
    """A baseline value of 0 has no lift (null, not a ZeroDivisionError); ope.json is strict JSON."""
    imp, cand = _log()
    imp["click"], imp["watch_s"] = 0, 0.0
    write_logs(tmp_path / "logs", imp, cand, {"logging": {"temperature": 0.5}})
    status = main(["ope", "--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "out"), "--n-boot", "20", "-q"])
    assert status == 0, capsys.readouterr().err
    result = _strict((tmp_path / "out" / "ope.json").read_text())
    for e in result["policies"]["control"]["rewards"]["click"]["estimates"].values():
        assert e["lift"]["value"] is None


def test_log_json_is_strict_and_required_and_replaced(tmp_path):
    imp, cand = _log()
    logs = tmp_path / "logs"
    write_logs(logs, imp, cand, {"truth": {"lift": float("inf"), "se": np.float64("nan"), "ok": [1.5, -np.inf]}})
    meta = _strict((logs / "log.json").read_text())
    assert meta == {"truth": {"lift": None, "se": None, "ok": [1.5, None]}}
    assert read_logs(logs).meta == meta
    # a directory without log.json (an unfinished log) is refused with one line naming the file
    (logs / "log.json").unlink()
    with pytest.raises(DataError, match=r"log\.json: no such file"):
        read_logs(logs)
    # rewriting a log: the old log.json (and its truth) goes before the tables are replaced
    write_logs(logs, imp, cand, {"truth": {"old": 1}})
    bad = cand.drop(index=0)  # invalid: refused before anything is written
    with pytest.raises(DataError):
        write_logs(logs, imp, bad, {"new": 1})
    assert (logs / "log.json").exists()
    import ranking.ope.schema as schema
    real = schema.atomic_write_parquet
    seen = []
    schema.atomic_write_parquet = lambda *a, **k: (seen.append((logs / "log.json").exists()), real(*a, **k))
    try:
        write_logs(logs, imp, cand, {"new": 1})
    finally:
        schema.atomic_write_parquet = real
    assert seen == [False, False] and read_logs(logs).meta == {"new": 1}
