"""Fleets, sweeps, configs and the fleet commands, on tiny chips and the bundled subset."""

from __future__ import annotations

import functools
import json
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import devices
import fleet_hooks
from mortal.cli import main
from mortal.config import ConfigError, config_from_dict, load_config
from mortal.errors import InputError
from mortal.fleet import RECORDS_FILE, pareto_front, read_records, run_fleet, summarize
from mortal.ops import training_macs
from mortal.progress import Progress
from mortal.report import digital_reference, write_report

TINY = {
    "name": "tiny", "seed": 7, "chips": 3,
    "chip": {"preset": "pcm", "layers": [16, 12]},
    "train": {"epochs": 1, "batch_size": 50},
    "data": {"source": "mini", "train_size": 300, "test_size": 100},
}


def _cfg(**changes):
    raw = json.loads(json.dumps(TINY))
    for k, v in changes.items():
        raw[k] = v
    return config_from_dict(raw)


def _strip(records):
    """Records without their timing (the only part allowed to differ between runs)."""
    return [{k: v for k, v in r.items() if k != "timing"} for r in records]


@pytest.fixture(scope="module")
def reference():
    """The tiny fleet run in this process (one thread), the baseline every backend must match."""
    with ThreadPoolExecutor(1) as ex:
        return _strip(run_fleet(_cfg(), executor=ex).records)


@pytest.fixture(scope="module")
def process_pool():
    with ProcessPoolExecutor(2) as ex:
        yield ex


def test_reference_fleet_is_sane(reference):
    assert [r["chip"] for r in reference] == [0, 1, 2]
    assert all(r["status"] == "ok" for r in reference)
    res = [r["result"] for r in reference]
    # unique chips: same recipe, different instances, different outcomes
    assert len({r["pulses"] for r in res}) == 3
    for r in res:
        assert 0.0 <= r["test_error"]["softmax"] <= 1.0
        assert r["train_energy_total_j"] > 0 and r["inference_energy_per_image_j"]["goodness"] > \
            r["inference_energy_per_image_j"]["softmax"]
    assert reference[0]["seed"] == {"entropy": 7, "spawn_key": [0]}


def test_records_are_identical_on_a_process_pool(reference, process_pool, tmp_path):
    res = run_fleet(_cfg(), tmp_path / "run", process_pool)
    assert _strip(res.records) == reference
    assert _strip(read_records(tmp_path / "run" / RECORDS_FILE)) == reference


def test_records_are_identical_on_a_dask_local_cluster(reference):
    distributed = pytest.importorskip("distributed")
    # a free port for the dashboard: 8787 may be taken (a warning, an error here)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        res = run_fleet(_cfg(), executor=client.get_executor(pure=False))
    assert _strip(res.records) == reference


def test_growing_the_fleet_keeps_earlier_chips(reference, process_pool):
    res = run_fleet(_cfg(chips=5), executor=process_pool)
    assert _strip(res.records)[:3] == reference
    assert [r["chip"] for r in res.records] == [0, 1, 2, 3, 4]


def test_resume_after_a_killed_run_runs_only_the_missing_chips(reference, process_pool, tmp_path):
    out = tmp_path / "run"
    run_fleet(_cfg(), out, process_pool)
    lines = (out / RECORDS_FILE).read_text().splitlines()
    # what a kill leaves: one finished record and a torn line
    (out / RECORDS_FILE).write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    with pytest.raises(Exception, match="resume"):
        run_fleet(_cfg(), out, process_pool)
    res = run_fleet(_cfg(), out, process_pool, resume=True)
    assert res.ran == 2
    assert _strip(res.records) == reference
    assert _strip(read_records(out / RECORDS_FILE)) == reference
    with pytest.raises(Exception, match="another config"):
        run_fleet(_cfg(seed=8), out, process_pool, resume=True)


def test_a_worker_killed_mid_chip_has_its_chip_rerun(reference, tmp_path):
    marker = tmp_path / "killed"
    kill_once = functools.partial(fleet_hooks.kill_worker, chip=1, marker=str(marker))
    res = run_fleet(_cfg(), tmp_path / "run", workers=2, task_fn=kill_once)
    assert marker.is_file()  # the worker did die
    assert _strip(res.records) == reference


def test_a_chip_that_always_kills_its_worker_fails_alone(reference, tmp_path):
    kill_always = functools.partial(fleet_hooks.kill_worker, chip=2)
    res = run_fleet(_cfg(), tmp_path / "run", workers=2, max_retries=1, task_fn=kill_always)
    assert [r["status"] for r in res.records] == ["ok", "ok", "failed"]
    assert "worker lost 2 times" in res.records[2]["error"]
    assert _strip(res.records)[:2] == reference[:2]


def test_task_fn_must_be_callable():
    with pytest.raises(InputError, match="task_fn must be callable"):
        run_fleet(_cfg(), task_fn="run_chip")


def test_progress_draws_on_stderr_and_is_silent_when_disabled(capsys):
    bar = Progress(4, "chips")
    for done in (1, 3, 4):
        bar.update(done)
    bar.close()
    bar.close()
    err = capsys.readouterr().err
    assert "chips" in err and "4/4" in err
    quiet = Progress(4, "chips", enabled=False)
    quiet.update(2)
    quiet.close()
    assert capsys.readouterr() == ("", "")


#: A sweep whose second point fails on every chip, found only when a chip is built: 100 label
#: copies over the first inputs need 1000 of them, and the images have 784.  (Data too small for
#: a batch is refused before any chip starts: tests/test_fleet_guards.py.)
FAILING_SWEEP = {"train.labels.placement": ["first"], "train.labels.copies": [1, 100]}


def test_a_failing_chip_is_recorded_and_the_fleet_goes_on(tmp_path, process_pool):
    cfg = _cfg(chips=2, sweep=FAILING_SWEEP)
    res = run_fleet(cfg, tmp_path / "run", process_pool)
    assert [r["status"] for r in res.records] == ["ok", "ok", "failed", "failed"]
    assert "labels over the first inputs" in res.records[2]["error"]
    rows = summarize(cfg, res.records)
    assert rows[1]["chips_failed"] == 2 and "error_mean" not in rows[1]


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.3), (3.0, 0.3), (0.5, 0.9), (2.5, 0.1), (4.0, 0.6)]
    assert pareto_front(pts) == [True, True, False, True, True, False]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [True, True]


def test_sweep_grid_and_its_front(process_pool, tmp_path):
    cfg = _cfg(chips=2, sweep={"chip.adc_bits": [3, 8], "train.measurement.reads": [1, 2]})
    assert [p.params for p in cfg.points()] == [
        {"chip.adc_bits": 3, "train.measurement.reads": 1}, {"chip.adc_bits": 3, "train.measurement.reads": 2},
        {"chip.adc_bits": 8, "train.measurement.reads": 1}, {"chip.adc_bits": 8, "train.measurement.reads": 2}]
    assert cfg.points()[0].chip.build_spec().adc.bits == 3
    assert [p.train.measurement.reads for p in cfg.points()] == [1, 2, 1, 2]
    # a field's unique name is routed into its group: the same settings
    routed = _cfg(chips=2, sweep={"chip.adc_bits": [3, 8], "train.reads": [1, 2]})
    assert [p.train for p in routed.points()] == [p.train for p in cfg.points()]
    res = run_fleet(cfg, tmp_path / "run", process_pool)
    rows = summarize(cfg, res.records)
    assert len(rows) == 4 and all(r["chips_ok"] == 2 for r in rows)
    # more bits and more reads cost more energy per inference
    e = {tuple(r["params"].values()): r["inference_energy_j"] for r in rows}
    assert e[(8, 1)] > e[(3, 1)] and e[(3, 2)] > e[(3, 1)]
    for key, flag in (("train_energy_j", "pareto_train"), ("inference_energy_j", "pareto_inference")):
        front = [r for r in rows if r[flag]]
        assert front
        for r in rows:  # nothing on the front is dominated; everything off it is
            dominated = any(o[key] <= r[key] and o["error_mean"] <= r["error_mean"] and
                            (o[key] < r[key] or o["error_mean"] < r["error_mean"]) for o in rows if o is not r)
            assert dominated != r[flag]


def test_digital_reference_counts_the_head_over_the_layers_it_reads():
    # two points that differ only in the head's input; records as run_chip writes them
    cfg = _cfg(chips=1, chip={"preset": "pcm", "layers": [16, 12, 8]},
               sweep={"train.recipe.head_layers": ["readout", "all"]})
    sizes = [794, 16, 12, 8]  # as if the one-hot label (10 inputs) were appended to 784 pixels
    records = [{"key": f"p{p.index:04d}-c00000", "point": p.index, "chip": 0, "status": "ok",
                "result": {"layer_sizes": sizes, "n_train": 300, "n_classes": 10}} for p in cfg.points()]
    train, _ = digital_reference(cfg, [records[0]])
    [(label, readout_j)] = train.items()
    assert label == "GPU, 16x12x8, 1 ep"
    [all_j] = digital_reference(cfg, [records[1]])[0].values()
    assert all_j > readout_j
    mac_j = devices.get_preset("ideal").energy.mac_j
    # Worked out by hand: 6 batches of 50; per batch three passes, 150 x (794*16 + 16*12 + 12*8)
    # = 1,948,800, the gradients of both phases, 100 x (795*16 + 17*12 + 13*8) = 1,302,800, and
    # the head's logits and gradient, 2 x 50 x features x 10; then the 30-epoch refit (the
    # default): one pass of the 300 images, 300 x 12,992 = 3,897,600, and 30 x 6 batches of the
    # head.  readout: all hidden layers but the first (20 features); all: every one (36).
    assert readout_j == pytest.approx(27_127_200 * mac_j)
    assert all_j == pytest.approx(30_103_200 * mac_j)
    assert training_macs(sizes, 300, 50, 1, 20, 10) == 19_629_600  # without the refit
    # one hidden layer: both read it
    one = _cfg(chips=1, chip={"preset": "pcm", "layers": [16]}, sweep={"train.head_layers": ["readout", "all"]})
    recs = [{**r, "result": {**r["result"], "layer_sizes": [794, 16]}} for r in records]
    assert len(set(digital_reference(one, recs)[0].values())) == 1


def test_a_fleet_on_the_digits_dataset(tmp_path):
    pytest.importorskip("sklearn")
    cfg = config_from_dict({
        "name": "digits", "seed": 1, "chips": 2,
        "chip": {"preset": "ideal", "layers": [32]},  # one layer: the goodness readout reads it
        "train": {"epochs": 2, "batch_size": 20},
        "data": {"source": "digits"},
    })
    with ThreadPoolExecutor(1) as ex:
        res = run_fleet(cfg, tmp_path / "run", ex)
    assert [r["status"] for r in res.records] == ["ok", "ok"], [r.get("error") for r in res.records]
    for r in res.records:
        out = r["result"]
        # 8x8 digits (64 inputs, no blank border): the one-hot label is appended (1 copy on ideal)
        assert out["layer_sizes"] == [74, 32] and out["n_classes"] == 10
        assert out["n_train"] == 1500 and out["n_test"] == 297
        assert out["test_error"]["softmax"] < 0.4 and out["test_error"]["goodness"] < 0.7  # chance: 0.9
    summary = write_report(tmp_path / "run", quiet=True)
    assert summary["chips_failed"] == 0 and list(summary["digital_reference_train_j"]) == ["GPU, 32, 2 ep"]


# -- configs -------------------------------------------------------------------------------------------

GOOD_TOML = """
name = "t"
seed = 3
chips = 2
[chip]
preset = "rram"
layers = [20, 10]
[chip.spec]
adc = { bits = 6 }
[train]
epochs = 2
policy = "direct"
[train.recipe]
head_layers = "readout"
[data]
source = "mini"
train_size = 300
[sweep]
"chip.dac_bits" = [4, 8]
"""


def test_load_config_and_resolved_round_trip(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD_TOML)
    cfg = load_config(p)
    assert cfg.chip.build_spec().adc.bits == 6 and cfg.train.policy == "direct"
    assert cfg.train.recipe.head_layers == "readout"
    pts = cfg.points()
    assert [pt.chip.build_spec().dac.bits for pt in pts] == [4, 8]
    assert all(pt.chip.build_spec().adc.bits == 6 for pt in pts)
    resolved = cfg.resolved()
    assert resolved["train"]["optimizer"]["lr"] == 0.01 and len(resolved["points"]) == 2
    resolved.pop("points")
    assert config_from_dict(resolved) == cfg


@pytest.mark.parametrize("text, where", [
    ('[train]\nepohcs = 3\n', "train.epohcs: unknown key"),
    ('[train]\nreads_per_measurement = 2\n', "train.reads_per_measurement: unknown key"),
    ('[train.measurement]\nreads = 0\n', "train.measurement.reads"),
    ('chips = "many"\n', "chips:"),
    ('chips = 0\n', "chips:"),
    ('[chip]\npreset = "quantum"\n', "chip.preset"),
    ('[chip.spec]\nadc = { bits = 40 }\n', "chip"),
    ('[sweep]\n"chip.colour" = [1]\n', "sweep"),
    ('[sweep]\n"train.lr" = [0.1, -1.0]\n', "sweep point [train.lr = -1.0]"),
    ('[sweep]\n"train.optimizer.lr" = [0.1, -1.0]\n', "sweep point [train.optimizer.lr = -1.0]"),
    ('[sweep]\n"train.reads_per_measurement" = [1, 2]\n', "sweep point [train.reads_per_measurement = 1]"),
    ('[train\nepochs = 1\n', "not valid TOML"),
    ('[train]\nseed = 4\n', ("train:", "seed cannot be set here")),
    ('[sweep]\n"train.seed" = [1, 2]\n', "unknown sweep key 'train.seed'"),
    ('[chip.spec]\nadc = { nosuch = 1 }\n', ("chip:", "spec.adc.nosuch")),
])
def test_bad_configs_name_the_file_and_the_field(tmp_path, text, where):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    # ``where``: what the message must hold (several parts: independent of pydantic's wording between them)
    assert str(p) in str(err.value)
    for part in (where if isinstance(where, tuple) else (where,)):
        assert part in str(err.value)


@pytest.mark.parametrize("text", ['[train]\nepohcs = 3\n', 'chips = -1\n', '[chip]\npreset = "x"\n'])
@pytest.mark.parametrize("command", ["fleet", "sweep"])
def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys, text, command):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    out = tmp_path / "out"
    assert main([command, str(p), "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert str(p) in err


def test_cli_unreachable_scheduler_fails_fast(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('chips = 1\n[data]\ntrain_size = 300\n')
    t = time.perf_counter()
    code = main(["fleet", str(p), "--out", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 3
    assert time.perf_counter() - t < 20
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- commands on tiny settings -------------------------------------------------------------------------

def _write_tiny(tmp_path: Path, **changes) -> Path:
    raw = {**json.loads(json.dumps(TINY)), **changes}
    lines = [f'name = "{raw["name"]}"', f"seed = {raw['seed']}", f"chips = {raw['chips']}",
             "[chip]", 'preset = "pcm"', "layers = [16, 12]", "[train]", "epochs = 1",
             "batch_size = 50", "[data]", 'source = "mini"', "train_size = 300", "test_size = 100"]
    if "sweep" in raw:
        lines.append("[sweep]")
        lines += [f'"{k}" = {json.dumps(v)}' for k, v in raw["sweep"].items()]
    p = tmp_path / "c.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_cli_fleet_sweep_and_report(tmp_path, capsys, reference):
    cfg = _write_tiny(tmp_path)
    out = tmp_path / "fleet"
    assert main(["fleet", str(cfg), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    assert _strip(read_records(out / RECORDS_FILE)) == reference
    assert main(["fleet", str(cfg), "--out", str(out), "--resume", "--quiet"]) == 0  # nothing left to do
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "s")]) == 2  # no [sweep] table
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "softmax err" in text and "digital reference" in text
    for fig in ("fleet_errors", "energy_vs_error_training", "energy_vs_error_inference", "energy_breakdown"):
        assert (out / f"{fig}.png").stat().st_size > 1000 and (out / f"{fig}.svg").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chips_recorded"] == 3 and summary["points"][0]["pareto_train"]

    scfg = _write_tiny(tmp_path, chips=1, sweep={"chip.adc_bits": [4, 8]})
    sout = tmp_path / "sweep"
    assert main(["sweep", str(scfg), "--out", str(sout), "--workers", "2", "--quiet"]) == 0
    rows = json.loads((sout / "summary.json").read_text())["points"]
    assert [r["params"] for r in rows] == [{"chip.adc_bits": 4}, {"chip.adc_bits": 8}]
    assert main(["fleet", str(scfg), "--out", str(tmp_path / "x")]) == 2  # a sweep needs `mortal sweep`
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_cli_fleet_with_failed_chips_exits_1(tmp_path):
    cfg = _write_tiny(tmp_path, chips=1, sweep=FAILING_SWEEP)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "o"), "--workers", "2", "--quiet"]) == 1
    recs = read_records(tmp_path / "o" / RECORDS_FILE)
    assert [r["status"] for r in recs] == ["ok", "failed"]


def test_cli_demo_on_tiny_settings(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--chips", "2", "--layers", "20,20", "--epochs", "1",
                 "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "distilled" in text and "weight copy" in text
    result = json.loads((out / "demo.json").read_text())
    assert [a["age"] for a in result["ageing"]] == ["fresh", "1 day", "1 month", "1 year"]
    assert result["distillation"]["teacher_energy_j"] > 0
    assert (out / "ageing_and_distillation.png").is_file() and (out / "fleet" / "fleet_errors.png").is_file()
    # a second demo replaces the first; a foreign folder is refused
    assert main(["demo", "--out", str(out), "--chips", "1", "--layers", "10,10", "--epochs", "1", "--quiet"]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert main(["demo", "--out", str(foreign), "--quiet"]) == 2
    assert (foreign / "keep.txt").is_file()


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.points() and cfg.chips >= 1


def test_cli_fleet_on_a_local_dask_cluster(tmp_path, reference):
    pytest.importorskip("distributed")
    cfg = _write_tiny(tmp_path)
    out = tmp_path / "dask"
    assert main(["fleet", str(cfg), "--out", str(out), "--dask-local", "2", "--quiet"]) == 0
    assert _strip(read_records(out / RECORDS_FILE)) == reference
    assert main(["fleet", str(cfg), "--out", str(tmp_path / "x"), "--dask-local", "2",
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
