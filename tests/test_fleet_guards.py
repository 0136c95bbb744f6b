"""The fleet's guards of a user's work (issue 15, the fleet items): one output folder, one run;
folders of other runs and unusable paths refused; config names that stay under runs/; bounded
sweeps; pool workers that die with their fleet; data, scheduler and report errors as one line.

Each test names the item of issue 15 it covers.  The concurrency and kill tests run real
processes (``python -m mortal.cli`` and a real ``kill -9``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fleet_hooks
from cli_helpers import one_error_line, tree_digest
from mortal import config as config_module
from mortal.cli import main
from mortal.config import ConfigError, config_from_dict, load_config
from mortal.errors import InputError
from mortal.fleet import CONFIG_FILE, RECORDS_FILE, dask_executor, load_run, read_records, run_fleet, summarize
from mortal.report import write_report
from mortal.runfolder import LOCK, MARKER

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

RAW = {
    "name": "guards", "seed": 5, "chips": 2,
    "chip": {"preset": "pcm", "layers": [12, 10]},
    "train": {"epochs": 1, "batch_size": 50},
    "data": {"source": "mini", "train_size": 200, "test_size": 100},
}


def _raw(**changes) -> dict:
    raw = json.loads(json.dumps(RAW))
    for key, value in changes.items():
        raw[key] = value
    return raw


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _write_config(path: Path, **changes) -> Path:
    """``RAW`` with ``changes`` as a TOML file (tables for the dicts, inline tables below them)."""
    raw = _raw(**changes)
    lines = [f"{k} = {_toml(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for table, values in raw.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f'"{k}" = {_toml(v)}' for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _wait_for(condition, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before the awaited state")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc; none where there is no /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _kill_with_children(proc: subprocess.Popen) -> None:
    """End a process this test started, and its workers (which, before issue 15 item 8 was
    fixed, outlived it)."""
    kids = _children(proc.pid)
    proc.kill()
    proc.wait()
    for pid in kids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-chip fleet folder (run in this process), copied by the tests that edit it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with ThreadPoolExecutor(1) as ex:
        run_fleet(config_from_dict(_raw()), out, ex)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- item 1: one run per output folder ---------------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_second_fleet_on_a_busy_folder_is_refused_and_records_stay_single(tmp_path):
    # issue 15 item 1: two `mortal fleet --out X` at once (and a --resume while the first runs)
    # both wrote X/records.jsonl; now the second exits 2 naming the first, which ends normally.
    cfg = _write_config(tmp_path / "c.toml")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mortal.cli", "fleet", str(cfg), "--out", str(out), "--workers", "2", "--quiet"]
    with open(tmp_path / "first.err", "wb") as first_err:
        first = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=first_err)
    try:
        # the config is written once the first run holds the folder; stopped, it holds it while
        # the second runs, however slow the machine
        _wait_for(lambda: (out / CONFIG_FILE).is_file(), 60, first)
        first.send_signal(signal.SIGSTOP)
        try:
            seconds = [subprocess.Popen(cmd + extra, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True) for extra in ([], ["--resume"])]
            errs = [second.communicate(timeout=120)[1] for second in seconds]
            for second, err in zip(seconds, errs):
                assert second.returncode == 2, err
                line = one_error_line(err)
                assert f"process {first.pid}" in line and "in use" in line
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(120) == 0, (tmp_path / "first.err").read_text()
    finally:
        if first.poll() is None:
            _kill_with_children(first)
    lines = (out / RECORDS_FILE).read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == ["p0000-c00000", "p0000-c00001"]


# -- item 3: folders of other runs -------------------------------------------------------------------

def _train_folder(path: Path, marker: bool) -> Path:
    path.mkdir()
    if marker:
        (path / MARKER).write_text(json.dumps({"kind": "train"}) + "\n")
        (path / "epochs.jsonl").write_text('{"epoch": 1}\n')
    (path / "config.json").write_text('{"preset": "pcm"}\n')
    (path / "summary.json").write_text('{"test_error": 0.1}\n')
    return path


@pytest.mark.parametrize("marker", [True, False], ids=["train-run", "legacy-train-run"])
@pytest.mark.parametrize("resume", [False, True], ids=["new", "resume"])
def test_fleet_refuses_a_folder_of_another_kind_of_run(tmp_path, capsys, marker, resume):
    # issue 15 item 3: `mortal fleet --out` on a train folder overwrote its summary.json
    cfg = _write_config(tmp_path / "c.toml")
    out = _train_folder(tmp_path / "train", marker)
    before = tree_digest(out)
    assert main(["fleet", str(cfg), "--out", str(out), "--quiet"] + (["--resume"] if resume else [])) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line
    assert tree_digest(out) == before


def test_fleet_refuses_a_folder_of_the_users_own_files(tmp_path, capsys):
    # issue 15 item 3: a non-empty folder that is not a fleet run is not written into
    cfg = _write_config(tmp_path / "c.toml")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    assert main(["fleet", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "already holds" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_another_run_and_excludes_resume(tmp_path, finished_run):
    # issue 15 item 3: replacing a folder takes an explicit overwrite (the CLI's --overwrite)
    out = _train_folder(tmp_path / "train", marker=True)
    cfg = config_from_dict(_raw())
    with pytest.raises(InputError, match="exclude each other"):
        run_fleet(cfg, out, task_fn=_must_not_run, resume=True, overwrite=True)
    with ThreadPoolExecutor(1) as ex:
        res = run_fleet(cfg, out, ex, overwrite=True)
    assert len(res.ok) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, MARKER, CONFIG_FILE, RECORDS_FILE])
    assert json.loads((out / MARKER).read_text())["kind"] == "fleet"


def test_a_fleet_folder_is_marked_and_resumable_and_a_legacy_one_too(tmp_path, finished_run):
    # issue 15 items 1 and 3: a fleet folder carries its kind; one made before markers resumes
    out = _copy(finished_run, tmp_path / "run")
    assert json.loads((out / MARKER).read_text())["kind"] == "fleet"
    (out / MARKER).unlink()
    (out / LOCK).unlink()
    with ThreadPoolExecutor(1) as ex:
        res = run_fleet(config_from_dict(_raw()), out, ex, resume=True)
    assert res.ran == 0 and len(res.ok) == 2
    assert json.loads((out / MARKER).read_text())["kind"] == "fleet"


# -- item 10: unusable --out -----------------------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_unusable_out_is_one_line_and_exit_2(tmp_path, capsys, where):
    # issue 15 item 10: exit 1 and "finished records are in <the file>"
    cfg = _write_config(tmp_path / "c.toml")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder\n")
    out = blocker if where == "file" else blocker / "sub" / "run"
    assert main(["fleet", str(cfg), "--out", str(out), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(blocker) in line and "finished records" not in line
    assert blocker.read_text() == "not a folder\n"
    with pytest.raises(InputError):
        run_fleet(config_from_dict(_raw()), out, task_fn=_must_not_run)


def _must_not_run(task):  # pragma: no cover - a chip that starts fails the test
    raise AssertionError("a chip started")


# -- item 7: names that escape runs/ -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "a/b", "a\\b", "", "  ", ".", "..", "x\0y"])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    # issue 15 item 7: name = "../../escape" or an absolute path wrote outside runs/
    with pytest.raises(ConfigError) as err:
        config_from_dict(_raw(name=name))
    assert "name:" in str(err.value)
    p = tmp_path / "c.toml"
    p.write_text(f"name = {json.dumps(name)}\n")
    with pytest.raises(ConfigError, match="name:"):
        load_config(p)


def test_a_plain_name_is_kept():
    assert config_from_dict(_raw(name="pcm-adc_6 bits.v2")).name == "pcm-adc_6 bits.v2"


def test_cli_refuses_an_escaping_name_and_writes_nothing(tmp_path, capsys, monkeypatch):
    # issue 15 item 7, through the command: runs/<name> would leave runs/
    monkeypatch.chdir(tmp_path)
    cfg = _write_config(tmp_path / "c.toml", name="../escape")
    assert main(["fleet", str(cfg), "--quiet"]) == 2
    assert "name" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


# -- item 9: bounded sweeps ------------------------------------------------------------------------

def test_a_huge_sweep_is_refused_fast_without_building_its_points(monkeypatch):
    # issue 15 item 9: a 10^8-point sweep grew memory without end; now counted first
    def no_points(*args, **kwargs):
        raise RuntimeError("a sweep point was built")

    monkeypatch.setattr(config_module, "SweepPoint", no_points)
    sweep = {"train.optimizer.lr": [0.001 * (i + 1) for i in range(10)], "train.epochs": list(range(1, 11)),
             "train.measurement.reads": list(range(1, 11)), "train.optimizer.momentum": [0.05 * i for i in range(10)],
             "chip.adc_bits": list(range(3, 13)), "chip.dac_bits": list(range(3, 13)),
             "train.batch_size": list(range(10, 110, 10)), "train.refit.epochs": list(range(1, 11))}
    t = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        config_from_dict(_raw(sweep=sweep))
    assert time.perf_counter() - t < 1.0
    msg = str(err.value)
    assert "sweep" in msg and "100,000,000 points" in msg and "100,000" in msg


def test_the_limit_counts_points_times_chips():
    # issue 15 item 9: 1,000 points of 200 chips is past the limit; 1,000 of 100 is not
    sweep = {"train.optimizer.lr": [0.001 * (i + 1) for i in range(100)], "train.epochs": list(range(1, 11))}
    with pytest.raises(ConfigError, match="200,000"):
        config_from_dict(_raw(chips=200, sweep=sweep))
    assert config_module.MAX_CHIP_RUNS == 100_000
    assert len(config_from_dict(_raw(chips=100, sweep=sweep)).points()) == 1000


# -- item 8: workers die with their fleet ------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kill test reads /proc")
def test_pool_workers_end_when_the_fleet_is_killed(tmp_path):
    # issue 15 item 8: kill -9 of a fleet left its pool workers running, reparented to PID 1
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    script = (
        "import functools, fleet_hooks\n"
        "from mortal.config import config_from_dict\n"
        "from mortal.fleet import run_fleet\n"
        f"cfg = config_from_dict({_raw()!r})\n"
        f"run_fleet(cfg, workers=2, task_fn=functools.partial(fleet_hooks.sleep_in_worker, pid_dir={str(pid_dir)!r}))\n"
    )
    fleet = subprocess.Popen([sys.executable, "-c", script], env=_env(), cwd=tmp_path)
    workers: list[int] = []
    try:
        _wait_for(lambda: len(list(pid_dir.iterdir())) == 2, 60, fleet)
        workers = [int(p.name) for p in pid_dir.iterdir()]
        assert all(_alive(w) for w in workers)
        os.kill(fleet.pid, signal.SIGKILL)
        fleet.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [w for w in workers if _alive(w)] == []
    finally:
        for w in workers:  # the workers this test started, if they outlived it
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if fleet.poll() is None:
            _kill_with_children(fleet)


def test_pool_workers_still_run_chips_normally(tmp_path):
    # issue 15 item 8: the watch on the parent does not disturb a normal run
    res = run_fleet(config_from_dict(_raw()), tmp_path / "run", workers=2)
    assert [r["status"] for r in res.records] == ["ok", "ok"]


# -- item 18: data errors before any chip starts -----------------------------------------------------

@pytest.mark.parametrize("data, sweep, expect", [
    ({"source": "npz", "path": "/nonexistent/data.npz"}, {}, "/nonexistent/data.npz"),
    ({"source": "mini", "train_size": 10**6}, {}, "train_size"),
    ({"source": "mini", "train_size": 200}, {"train.batch_size": [50, 500]}, "batch_size"),
], ids=["missing-path", "train-size", "batch"])
def test_data_errors_are_found_before_any_chip_starts(tmp_path, capsys, data, sweep, expect):
    # issue 15 item 18: every chip failed inside the workers, exit 1, nothing said with --quiet
    changes = {"data": data} | ({"sweep": sweep} if sweep else {})
    out = tmp_path / "run"
    with pytest.raises(InputError, match=expect):
        run_fleet(config_from_dict(_raw(**changes)), out, task_fn=_must_not_run)
    assert not out.exists()
    cfg = _write_config(tmp_path / "c.toml", **changes)
    assert main(["sweep" if sweep else "fleet", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert expect in one_error_line(capsys.readouterr().err)
    assert not out.exists()


# -- item 15: scheduler addresses --------------------------------------------------------------------

BAD_ADDRESSES = ["not a url", "foo://x:1", "tcp://localhost:abc", "", "   ", "tcp://localhost",
                 "tcp://127.0.0.1:99999", "tcp://127.0.0.1:0", "tcp://:8786", "tcp://host:8786/path"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_a_scheduler_value_that_is_not_an_address_is_refused_before_connecting(monkeypatch, address):
    # issue 15 item 15: such values reached Dask (exit 2 with its wording, or a 5 s timeout and exit 3)
    distributed = pytest.importorskip("distributed")

    def no_client(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(distributed, "Client", no_client)
    with pytest.raises(InputError, match="scheduler address"):
        dask_executor(address)


@pytest.mark.parametrize("address", ["not a url", "foo://x:1", "tcp://localhost:abc", ""])
def test_cli_refuses_a_scheduler_value_that_is_not_an_address(tmp_path, capsys, address):
    # issue 15 item 15, through the command: one line, exit 2, fast, nothing written
    pytest.importorskip("distributed")
    cfg = _write_config(tmp_path / "c.toml")
    t = time.perf_counter()
    assert main(["fleet", str(cfg), "--out", str(tmp_path / "o"), "--scheduler", address, "--quiet"]) == 2
    assert time.perf_counter() - t < 3
    assert "scheduler address" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "tls://sched.example.org:8786",
                                     "tcp://[::1]:8786", "ws://my_host-1:80"])
def test_well_formed_addresses_reach_dask(monkeypatch, address):
    distributed = pytest.importorskip("distributed")
    seen = []

    def fake_client(addr, **kwargs):
        seen.append(addr)
        raise OSError("unreachable")

    monkeypatch.setattr(distributed, "Client", fake_client)
    with pytest.raises(ConnectionError):
        dask_executor(address, timeout_s=0.1)
    assert seen and seen[0].endswith(address.split("://")[-1])


# -- item 14: reports on damaged folders ----------------------------------------------------------------

@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'{"chips": "many"}'],
                         ids=["json", "utf8", "not-object", "invalid"])
def test_report_on_a_corrupt_config_is_one_line_and_exit_2(tmp_path, capsys, finished_run, content):
    # issue 15 item 14: tracebacks from `mortal report`
    out = _copy(finished_run, tmp_path / "run")
    (out / CONFIG_FILE).write_bytes(content)
    assert main(["report", str(out), "--quiet"]) == 2
    assert CONFIG_FILE in one_error_line(capsys.readouterr().err)
    with pytest.raises(InputError):
        load_run(out)


def _edit_line(path: Path, index: int, edit) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = edit(lines[index])
    path.write_bytes(b"".join(lines))


def _drop(key: str):
    def edit(line: bytes) -> bytes:
        rec = json.loads(line)
        rec.pop(key) if key in rec else rec["result"].pop(key)
        return (json.dumps(rec) + "\n").encode()
    return edit


@pytest.mark.parametrize("edit, reason", [
    (_drop("point"), "'point'"),
    (_drop("key"), "'key'"),
    (_drop("test_error"), "test_error"),
    (lambda line: line[:10] + b"\xff\xfe" + line[10:], "UTF-8"),
    (lambda line: b'"just a string"\n', "object"),
    (lambda line: line.replace(b'"status": "ok"', b'"status": 3'), "status"),
], ids=["point", "key", "result-field", "utf8", "not-object", "status-type"])
def test_report_leaves_out_a_damaged_record_and_says_so(tmp_path, capsys, finished_run, edit, reason):
    # issue 15 item 14: records missing keys or with non-UTF-8 bytes gave a KeyError or
    # UnicodeDecodeError; such a line is left out of the report, named on one warning line and in
    # summary.json, and the report counts only the chips it could read.
    out = _copy(finished_run, tmp_path / "run")
    _edit_line(out / RECORDS_FILE, 0, edit)
    assert main(["report", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mortal: warning: ") and "line 1" in err[0] and reason in err[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chips_recorded"] == 1 and summary["points"][0]["chips_ok"] == 1
    assert [s["line"] for s in summary["records_skipped"]] == [1]
    skipped: list = []
    assert len(read_records(out / RECORDS_FILE, skipped=skipped)) == 1 and skipped[0][0] == 1


def test_summarize_refuses_a_malformed_record():
    # issue 15 item 14: summarize raised KeyError
    cfg = config_from_dict(_raw())
    with pytest.raises(InputError, match="point"):
        summarize(cfg, [{"key": "p0000-c00000", "chip": 0, "status": "ok"}])


def test_a_report_that_cannot_be_written_is_one_line(tmp_path, capsys, finished_run):
    # issue 15 item 14: writing the report where it cannot be written (here summary.json is a
    # folder) gave a traceback; now one line and exit 2
    out = _copy(finished_run, tmp_path / "run")
    (out / "summary.json").mkdir()
    assert main(["report", str(out), "--quiet"]) == 2
    assert str(out) in one_error_line(capsys.readouterr().err)


def test_resume_moves_lines_that_are_not_records_aside(tmp_path, finished_run):
    # issue 15 item 14: a resumed run re-runs the chip of a damaged record and keeps the damaged
    # line in records.rejected.jsonl; records.jsonl then holds only records
    out = _copy(finished_run, tmp_path / "run")
    good = read_records(out / RECORDS_FILE)
    _edit_line(out / RECORDS_FILE, 1, _drop("test_error"))
    with (out / RECORDS_FILE).open("ab") as fh:
        fh.write(b'{"key": "p0000-c0')  # the torn line of a killed run
    with ThreadPoolExecutor(1) as ex:
        res = run_fleet(config_from_dict(_raw()), out, ex, resume=True)
    assert res.ran == 1
    strip = lambda recs: [{k: v for k, v in r.items() if k != "timing"} for r in recs]  # noqa: E731
    assert strip(read_records(out / RECORDS_FILE)) == strip(good)
    skipped: list = []
    read_records(out / RECORDS_FILE, skipped=skipped)
    assert skipped == []
    rejected = (out / "records.rejected.jsonl").read_bytes().splitlines()
    assert len(rejected) == 2 and rejected[1] == b'{"key": "p0000-c0'


def test_write_report_on_a_damaged_folder_raises_input_error(tmp_path, finished_run):
    out = _copy(finished_run, tmp_path / "run")
    (out / CONFIG_FILE).write_text("{")
    with pytest.raises(InputError, match=CONFIG_FILE):
        write_report(out, quiet=True)


# -- the hooks the kill test uses -------------------------------------------------------------------

def test_sleep_hook_records_its_pid_and_runs_the_chip(tmp_path):
    from mortal.fleet import ChipTask

    cfg = config_from_dict(_raw())
    task = ChipTask(point=cfg.points()[0], chip=0, root_seed=cfg.seed, data=cfg.data)
    rec = fleet_hooks.sleep_in_worker(task, pid_dir=str(tmp_path), seconds=0)
    assert rec["status"] == "ok" and (tmp_path / str(os.getpid())).is_file()
