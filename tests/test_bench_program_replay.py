"""``bench_program_replay.py``: the captured calls of one batch replay from their own state, with
and without pair refreshes, and leave ``Crossbar.program`` and the refresh level as they were."""

from __future__ import annotations

import numpy as np
import pytest

from devices import _devstate as S
from devices import crossbar as CB


@pytest.fixture
def bench(bench_script):
    # (its process_env.apply() at import changes nothing here: numpy is loaded)
    return bench_script("bench_program_replay", 400)


def test_replays_every_layer_of_the_batch_and_restores_what_it_changed(bench, capsys, monkeypatch):
    program = CB.Crossbar.program
    levels = []
    real = bench.replay

    def spy(prog, c, repeat, flush):  # the refresh level of each replay
        levels.append(float(c["layer"].pp[S.PP_REFRESH_AT]))
        return real(prog, c, repeat, flush)
    monkeypatch.setattr(bench, "replay", spy)
    bench.main(["--layers", "24,24", "--train-size", "400", "--epoch", "2", "--batch", "3", "--repeat", "2"])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| 784x24") or ln.startswith("| 24x24")]
    # both layers of the batch, in layer order (the script stops if a replay does not reproduce
    # the captured call's result and weights)
    assert [r.split("|")[1].strip() for r in rows] == ["784x24", "24x24"], out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and int(cells[3]) > 0
    assert "per batch:" in out
    assert CB.Crossbar.program is program
    # each layer replayed at its own refresh level, then with the level out of reach
    assert levels[0] < np.inf and levels[1] == np.inf and levels[2] < np.inf and levels[3] == np.inf


def test_refuses_a_batch_beyond_the_epoch(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--train-size", "400", "--batch", "5"])
    assert exc.value.code == 2 and "--batch <= 4" in capsys.readouterr().err
