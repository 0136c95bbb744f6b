"""Output folders (issue 15): no two runs write one folder at once, a folder is reused only as
its own run (or with ``--overwrite``), a refused resume changes nothing, an unusable ``--out``
is refused with one line, and every command writes nothing when it refuses.

The concurrency tests run real processes: ``python -m mortal.cli train`` twice, and a process
holding a folder's lock (:func:`mortal.runfolder.claim`) while each command tries the folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import one_error_line, tree_digest
from mortal import runfolder
from mortal.cli import main
from mortal.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "ideal", "--layers", "20", "--mini", "--train-size", "200", "--quiet",
        "--set", "train.defaults=hinton"]
TRAIN = ["train", *TINY, "--epochs", "1"]
LIFE = ["lifetime", "--mini", "--train-size", "1000", "--layers", "10", "--epochs", "1", "--generations", "1",
        "--check-every", "1y", "--max-age", "1y", "--set", "train.defaults=hinton", "--quiet"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return env


def _mortal(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mortal.cli", *argv], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=120)


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 60.0) -> str:
    """Read ``proc``'s stdout until a line holding ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before printing {needle!r}: "
                                 f"{proc.stderr.read()}")
    raise AssertionError(f"no {needle!r} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A finished `mortal train` run to distill from."""
    out = tmp_path_factory.mktemp("teacher") / "t"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


# -- item 1: no two runs write one --out at once ---------------------------------------------------

def test_a_second_train_on_a_folder_in_use_is_refused_naming_the_first(tmp_path):
    """Two real `mortal train` processes on one folder: the second is refused while the first runs
    (a fresh run and a resume alike); the first's log holds only its own epochs."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "mortal.cli", "train", *[a for a in TINY if a != "--quiet"],
                              "--epochs", "100000", "--eval-every", "0", "--seed", "1", "--out", str(out)],
                             cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(first, "epoch    1")
        for extra in (["--seed", "2"], ["--overwrite"], ["--resume"]):
            second = _mortal("train", *TINY, "--epochs", "3", "--out", str(out), *extra, cwd=tmp_path)
            assert second.returncode == 2, (extra, second.stderr)
            line = one_error_line(second.stderr)
            assert "in use by another mortal run" in line and f"process {first.pid}" in line, line
        assert first.poll() is None  # still running, undisturbed
    finally:
        _stop(first)
    assert runfolder.in_use(out) is None  # the lock went with the process
    epochs = [json.loads(line)["epoch"] for line in (out / "epochs.jsonl").read_text().splitlines()
              if line.strip()]
    assert epochs == list(range(1, len(epochs) + 1))  # one run's epochs, none interleaved


HOLD = """
import sys, time
from pathlib import Path
from mortal.runfolder import claim
with claim(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def held(tmp_path):
    """``held(folder, kind)``: another process holds ``folder``'s lock (as a run of ``kind``) until the test ends."""
    procs = []

    def hold(folder: Path, kind: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), kind], cwd=tmp_path, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        _wait_for_line(proc, "held")
        return proc

    yield hold
    for proc in procs:
        _stop(proc)


@pytest.mark.parametrize("command,overwrite", [("train", False), ("train", True), ("lifetime", False),
                                               ("lifetime", True), ("distill", False), ("distill", True),
                                               ("demo", False)])
def test_every_command_refuses_a_folder_another_process_writes(command, overwrite, held, teacher, tmp_path, capsys):
    out = tmp_path / "busy"
    kind = "demo" if command == "demo" else command  # for the demo: an earlier demo, which it would replace
    holder = held(out, kind)
    before = tree_digest(out)
    argv = {"train": TRAIN, "lifetime": LIFE, "distill": ["distill", "--teacher", str(teacher), "--quiet"],
            "demo": ["demo", "--chips", "1", "--epochs", "1", "--layers", "10", "--quiet"]}[command]
    if overwrite:
        argv = argv + ["--overwrite"]
    assert main(argv + ["--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"process {holder.pid}" in line and "in use" in line
    assert tree_digest(out) == before


def test_distill_refuses_a_teacher_another_process_writes(held, teacher, tmp_path, capsys):
    held(teacher, "train")
    before = tree_digest(teacher)
    assert main(["distill", "--teacher", str(teacher), "--quiet", "--out", str(tmp_path / "s")]) == 2
    assert "in use" in one_error_line(capsys.readouterr().err)
    assert tree_digest(teacher) == before and not (tmp_path / "s").exists()


def test_a_claim_checks_the_folder_again_under_the_lock(tmp_path):
    """Between check_out and claim another run may fill the folder: the claim refuses it then."""
    out = tmp_path / "r"
    assert runfolder.check_out(out, "train") == out
    with runfolder.claim(out, "train"):  # another run, start to end
        (out / "epochs.jsonl").write_text("{}\n")
    before = tree_digest(out)
    with pytest.raises(InputError, match="already holds a train run"):
        with runfolder.claim(out, "train", resume=False):
            raise AssertionError("not reached")
    assert tree_digest(out) == before


def test_a_child_forked_during_a_claim_does_not_keep_the_folder_in_use(tmp_path):
    """A fleet worker forked while a folder is claimed outlives the claim; the folder is free once
    the claim ends (the child closed its copy of the lock's descriptor at the fork)."""
    out = tmp_path / "r"
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    with runfolder.claim(out, "fleet"):
        pid = os.fork()
        if pid == 0:  # the child says it runs (its fork hooks have run), then waits for the parent
            try:
                os.close(write_end)
                os.write(ready_write, b"r")
                os.read(read_end, 1)
            finally:
                os._exit(0)
        os.close(read_end)
        os.close(ready_write)
        assert os.read(ready_read, 1) == b"r"
        os.close(ready_read)
        assert runfolder.in_use(out) is not None  # held while the claim lasts
    try:
        assert runfolder.in_use(out) is None  # the live child does not hold it
        with runfolder.claim(out, "fleet", resume=True):  # another run can take it at once
            pass
    finally:
        os.write(write_end, b"x")
        os.close(write_end)
        os.waitpid(pid, 0)


def test_a_claim_refused_by_its_block_leaves_no_trace(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(InputError):
        with runfolder.claim(out, "train", resume=False):
            raise InputError("bad input, found before anything was written")
    assert not (tmp_path / "a").exists()


# -- item 3: a folder is reused only as its own run, or with --overwrite ---------------------------

def test_train_twice_into_one_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    before = tree_digest(out)
    assert main(TRAIN + ["--seed", "3", "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "already holds a train run" in line and "--overwrite" in line and "resume" in line
    assert tree_digest(out) == before
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 1


def test_overwrite_replaces_the_folder(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    assert main(TRAIN + ["--seed", "4", "--overwrite", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 4
    assert runfolder.run_kind(out) == "train"
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 1


def test_overwrite_replaces_only_a_mortal_run(tmp_path, capsys):
    """`mortal train --out . --overwrite` once emptied the working folder: a folder that holds no
    mortal run (no marker, no run layout) is refused, --overwrite or not."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')  # a user's own file
    for extra in ([], ["--overwrite"]):
        assert main(TRAIN + extra + ["--out", str(out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "files" in line and ("not a mortal run" in line or "only a mortal run" in line)
        assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert (out / "config.json").read_text() == '{"mine": true}'


def test_overwrite_refuses_the_current_folder_and_its_ancestors(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    (out / "sub").mkdir()
    (out / "sub" / "mine.txt").write_text("keep")
    before = tree_digest(out)
    for cwd, target in ((out, "."), (out / "sub", "..")):
        monkeypatch.chdir(cwd)
        assert main(TRAIN + ["--overwrite", "--out", target]) == 2
        assert "current folder" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before
    monkeypatch.setenv("HOME", str(out))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="home folder"):
        runfolder.check_out(out, "train", overwrite=True)
    with pytest.raises(InputError, match="is /;"):
        runfolder.check_out("/", "train", overwrite=True)


def test_overwrite_refuses_a_folder_holding_what_the_run_reads(tmp_path, monkeypatch, capsys):
    """`mortal fleet W/cfg.toml --out W --overwrite` once deleted its own config."""
    out = tmp_path / "w"
    config = out / "c.toml"
    body = ('name = "t"\nchips = 1\n[chip]\npreset = "ideal"\nlayers = [10]\n[train]\nepochs = 1\n'
            'defaults = "hinton"\n[data]\nsource = "mini"\ntrain_size = 200\n')
    assert main(TRAIN + ["--out", str(out)]) == 0
    config.write_text(body)
    before = tree_digest(out)
    assert main(["fleet", str(config), "--quiet", "--workers", "1", "--out", str(out), "--overwrite"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(config) in line and "reads" in line
    assert tree_digest(out) == before
    data = out / "d.npz"  # train, lifetime, distill: a --data file
    data.write_bytes(b"x")
    for protect in ((data,), (out / "teacher",)):
        with pytest.raises(InputError, match="which this run reads"):
            runfolder.check_out(out, "train", overwrite=True, protect=protect)
        with pytest.raises(InputError, match="which this run reads"):
            with runfolder.claim(out, "train", overwrite=True, protect=protect):
                raise AssertionError("not reached")
    assert data.exists() and config.exists()


def test_a_run_stopped_before_its_first_file_leaves_a_folder_a_new_run_takes(tmp_path, capsys):
    """Ctrl-C before the first checkpoint left the marker, the lock and empty folders: a plain
    rerun takes the folder, and --resume says there is nothing to resume."""
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    for p in out.iterdir():  # as a run interrupted before it wrote anything
        if p.name in (runfolder.MARKER, runfolder.LOCK):
            continue
        if p.is_dir():
            import shutil
            shutil.rmtree(p)
            p.mkdir()
        else:
            p.unlink()
    assert main(TRAIN + ["--resume", "--out", str(out)]) == 2
    assert "no checkpoint" in one_error_line(capsys.readouterr().err)
    assert main(TRAIN + ["--out", str(out)]) == 0, capsys.readouterr().err
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 1


def test_a_train_folder_without_a_checkpoint_is_not_offered_for_resume(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    import shutil
    shutil.rmtree(out / "checkpoints")  # stopped after its first epoch's log, before its first checkpoint
    assert main(TRAIN + ["--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "already holds a train run" in line and "resume" not in line.replace("no checkpoint to resume", "")


def test_a_train_interrupted_by_sigint_is_taken_by_a_plain_rerun(tmp_path):
    """A real `mortal train` stopped by SIGINT (Ctrl-C) during its first epoch, before any checkpoint."""
    import signal

    out = tmp_path / "run"
    big = ["train", "--preset", "ideal", "--layers", "2000,2000", "--mini", "--set", "train.defaults=hinton",
           "--epochs", "1", "--quiet", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "mortal.cli", *big], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / runfolder.MARKER).exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is not None or (out / "checkpoints" / "LATEST").exists():
            pytest.skip("the run ended or checkpointed before it could be interrupted")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if (out / "checkpoints" / "LATEST").exists() or (out / "epochs.jsonl").exists():
        pytest.skip("the run wrote its first files before it could be interrupted")
    assert runfolder.check_out(out, "train") == out  # a fresh run may take it
    r = _mortal(*TRAIN, "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("command", ["lifetime", "distill"])
def test_lifetime_and_distill_claim_before_the_run_starts(command, held, teacher, tmp_path, monkeypatch, capsys):
    """A clash found when the folder is claimed (another run took it after the check) exits 2,
    before any training or teacher read."""
    import mortal.distill
    import mortal.lifetime

    out = tmp_path / "o"
    real = runfolder.check_out
    holders = []

    def check_then_taken(*a, **k):
        path = real(*a, **k)
        if path == out:
            holders.append(held(out, command))
        return path

    def never(*a, **k):
        raise AssertionError("the run started")

    monkeypatch.setattr(runfolder, "check_out", check_then_taken)
    monkeypatch.setattr(mortal.lifetime, "run_lifetime", never)
    monkeypatch.setattr(mortal.distill, "distill", never)
    argv = LIFE if command == "lifetime" else ["distill", "--teacher", str(teacher), "--quiet"]
    assert main(argv + ["--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert holders and f"process {holders[0].pid}" in line


def test_report_refuses_a_folder_in_use(held, tmp_path, capsys):
    out = tmp_path / "f"
    held(out, "fleet")
    before = tree_digest(out)
    assert main(["report", str(out), "--quiet"]) == 2
    assert "in use" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before


def test_an_out_that_cannot_be_claimed_is_one_line(tmp_path, capsys):
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")
    assert main(TRAIN + ["--out", str(dangling)]) == 2
    assert str(dangling) in one_error_line(capsys.readouterr().err)
    with pytest.raises(InputError, match="link"):
        with runfolder.claim(dangling, "train"):
            raise AssertionError("not reached")
    out = tmp_path / "r"
    (out / runfolder.LOCK).mkdir(parents=True)  # a lock that cannot be opened for writing
    with pytest.raises(InputError, match=runfolder.LOCK):
        with runfolder.claim(out, "train"):
            raise AssertionError("not reached")


def test_a_resume_names_the_recorded_size_the_data_cannot_give(tmp_path, capsys):
    import numpy as np

    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0  # 200 examples of --mini
    small = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(small, x_train=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), y_train=np.arange(100) % 10,
             x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=np.arange(20) % 10)
    before = tree_digest(out)
    assert main(["train", "--quiet", "--epochs", "2", "--resume", "--data", str(small), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"the run in {out} was trained on 200 examples" in line and f"--data {small} has 100" in line
    assert "--train-size" not in line
    assert tree_digest(out) == before


@pytest.mark.parametrize("command", ["lifetime", "distill"])
def test_lifetime_and_distill_refuse_a_folder_that_is_not_empty(command, teacher, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = LIFE if command == "lifetime" else ["distill", "--teacher", str(teacher), "--quiet"]
    assert main(argv + ["--out", str(out)]) == 2
    assert "already holds files" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == {"notes.txt": tree_digest(out)["notes.txt"]}
    assert main(argv + ["--out", str(out), "--overwrite"]) == 2  # not a mortal run: never replaced
    one_error_line(capsys.readouterr().err)
    assert (out / "notes.txt").read_text() == "keep me"
    (out / runfolder.MARKER).write_text('{"kind": "train"}')  # now a mortal run's folder
    assert main(argv + ["--out", str(out), "--overwrite"]) == 0, capsys.readouterr().err
    assert not (out / "notes.txt").exists() and runfolder.run_kind(out) == command


def test_resume_of_a_folder_of_another_kind_is_refused(teacher, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(teacher), "--quiet", "--out", str(out)]) == 0
    before = tree_digest(out)
    assert main(TRAIN + ["--resume", "--out", str(out)]) == 2
    assert "holds no train run to resume (it holds a distill run)" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    assert main(TRAIN + ["--resume", "--overwrite", "--out", str(tmp_path / "r")]) == 2
    assert "not both" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_a_train_folder_made_before_markers_still_resumes(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    (out / runfolder.MARKER).unlink()
    (out / runfolder.LOCK).unlink()
    assert main(["train", *TINY, "--epochs", "2", "--resume", "--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert runfolder.run_kind(out) == "train"


def test_demo_replaces_only_an_earlier_demo(tmp_path, monkeypatch, capsys):
    """The demo's folder rule, with the tour itself stubbed out: an earlier demo (its marker, or a
    demo.json from before markers) is replaced; anything else is refused."""
    import mortal.demo as demo

    toured = []
    monkeypatch.setattr(demo, "_tour", lambda out, *a: toured.append(sorted(p.name for p in out.iterdir())) or 0)
    argv = ["demo", "--chips", "1", "--epochs", "1", "--layers", "10", "--quiet", "--out"]
    marked, legacy, other = tmp_path / "marked", tmp_path / "legacy", tmp_path / "other"
    for folder in (marked, legacy, other):
        folder.mkdir()
        (folder / "old.png").write_text("x")
    (marked / runfolder.MARKER).write_text('{"kind": "demo"}')  # an interrupted demo: no demo.json yet
    (legacy / "demo.json").write_text("{}")
    for folder in (marked, legacy):
        assert main(argv + [str(folder)]) == 0
        assert toured[-1] == [runfolder.LOCK, runfolder.MARKER]  # cleared, then marked as a demo
    assert main(argv + [str(other)]) == 2
    assert "earlier demo" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in other.iterdir()) == ["old.png"]


# -- item 4: a refused resume never rewrites config.json -------------------------------------------

@pytest.mark.parametrize("change", [
    ["--seed", "9"], ["--preset", "pcm"], ["--layers", "30"],  # item 22: given, and not the run's
    ["--set", "train.optimizer.lr=0.02"], ["--train-size", "300"], ["--epochs", "1"],
])
def test_a_refused_resume_rewrites_nothing(change, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "2", "--seed", "5", "--out", str(out)]) == 0
    config = (out / "config.json").read_bytes()
    before = tree_digest(out)
    assert main(["train", *TINY, "--epochs", "3", "--resume", "--out", str(out), *change]) == 2
    one_error_line(capsys.readouterr().err)
    assert (out / "config.json").read_bytes() == config
    assert tree_digest(out) == before


def test_resume_with_the_runs_own_preset_layers_and_seed_is_accepted(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--seed", "5", "--out", str(out)]) == 0
    assert main(["train", *TINY, "--seed", "5", "--epochs", "2", "--resume", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["seed"] == 5


# -- item 10 and 22: an unusable --out exits 2 with one line and writes nothing --------------------

def _argv(command: str, teacher: Path) -> list[str]:
    return {"train": TRAIN, "lifetime": LIFE, "distill": ["distill", "--teacher", str(teacher), "--quiet"],
            "demo": ["demo", "--chips", "1", "--epochs", "1", "--layers", "10", "--quiet"]}[command]


@pytest.mark.parametrize("command", ["train", "lifetime", "distill", "demo"])
@pytest.mark.parametrize("where", ["file", "under a file", "empty"])
def test_an_unusable_out_exits_2_and_writes_nothing(command, where, teacher, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"file": str(blocker), "under a file": str(blocker / "sub" / "dir"), "empty": ""}[where]
    before = tree_digest(tmp_path)
    assert main(_argv(command, teacher) + ["--out", out]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert ("file" in line) if where != "empty" else ("--out is empty" in line)
    assert tree_digest(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


@pytest.mark.parametrize("command", ["train", "lifetime", "distill", "demo"])
def test_a_read_only_out_exits_2_and_writes_nothing(command, teacher, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root ignores file permissions (unless its capabilities are dropped)
            try:
                (ro / "probe").touch()
            except PermissionError:
                pass
            else:
                pytest.skip("root ignores file permissions")
        for out in (ro, ro / "run"):
            assert main(_argv(command, teacher) + ["--out", str(out)]) == 2
            assert "cannot be written" in one_error_line(capsys.readouterr().err)
            assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("command", ["fleet", "sweep"])
def test_fleet_and_sweep_refuse_an_empty_out(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    body = 'name = "t"\nchips = 1\n[chip]\npreset = "ideal"\nlayers = [10]\n[train]\nepochs = 1\n' \
           '[data]\nsource = "mini"\ntrain_size = 200\n'
    if command == "sweep":
        body += '[sweep]\n"train.optimizer.lr" = [0.01, 0.02]\n'
    (tmp_path / "c.toml").write_text(body)
    assert main([command, "c.toml", "--quiet", "--out", ""]) == 2
    assert "--out is empty" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_fleet_refuses_a_train_folder_unless_told_to_overwrite(tmp_path, capsys):
    """Issue 15, item 3: `mortal fleet --out` on a train folder once overwrote its summary.json."""
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out)]) == 0
    before = tree_digest(out)
    config = tmp_path / "c.toml"
    config.write_text('name = "t"\nchips = 1\n[chip]\npreset = "ideal"\nlayers = [10]\n[train]\nepochs = 1\n'
                      'defaults = "hinton"\n[data]\nsource = "mini"\ntrain_size = 200\n')
    assert main(["fleet", str(config), "--quiet", "--workers", "1", "--out", str(out)]) == 2
    assert "already holds a train run" in one_error_line(capsys.readouterr().err)
    assert tree_digest(out) == before
    assert main(["fleet", str(config), "--quiet", "--workers", "1", "--out", str(out), "--overwrite"]) == 0
    assert runfolder.run_kind(out) == "fleet" and not (out / "epochs.jsonl").exists()
