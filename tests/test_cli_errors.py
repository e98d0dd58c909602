"""Bad input to `lceval run`: exit code 2, one line on stderr starting with "error:" that names the offending
value or file, no traceback, and nothing already written is changed or lost.

Every case runs the real console script in a subprocess (hf backend, demo model, tiny needle grid); none of
them starts an engine except the one real run that the resume-mismatch cases compare against.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN_ID = "X"
SMALL_GRID = ["-o", "needle.lengths=[256]", "-o", "needle.depths=[0,50]"]
DEMO = ["--model", "lceval-demo"]  # named, so that another default model cannot change what these cases test


@pytest.fixture(scope="module")
def env(cli_env) -> dict[str, str]:
    return cli_env


@pytest.fixture(scope="module")
def demo_model(env) -> Path:
    """The demo model folder, built (once) in the shared cache."""
    code = "from lceval.running.demo import demo_model_path; print(demo_model_path())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert (path / "config.json").exists()
    return path


def lceval(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    lceval_bin = shutil.which("lceval")
    command = [lceval_bin] if lceval_bin else [sys.executable, "-m", "lceval"]
    return subprocess.run(
        [*command, *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, and a last stderr line that is the whole `error:` message naming `fragments`."""
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, f"a traceback instead of a user error:\n{output}"
    assert proc.returncode == 2, f"exit code {proc.returncode}, expected 2:\n{output}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, f"nothing on stderr:\n{output}"
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, (
        f"expected exactly one line starting with 'error:' on stderr, got:\n{proc.stderr}"
    )
    message = lines[-1]
    assert message.startswith("error:"), (
        "the error message is not one line (it was wrapped, or something was printed after it); stderr was:\n"
        + proc.stderr
    )
    for fragment in fragments:
        assert fragment in message, (
            f"{fragment!r} not named in the error line {message!r}; stderr:\n{proc.stderr}"
        )
    return message


@pytest.fixture(scope="module")
def finished_run(env, demo_model, tmp_path_factory) -> Path:
    """A real, complete small run (hf backend) with run id X; the cases below must leave it as it is."""
    out = tmp_path_factory.mktemp("runs")
    proc = lceval(env, "run", *DEMO, "--backend", "hf", "--out", out, "--run-id", RUN_ID, *SMALL_GRID)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = out / RUN_ID
    for name in ("manifest.json", "samples.jsonl", "results.json"):
        assert (run_dir / name).exists(), name
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 3  # 2 cells and the no-needle control
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    return run_dir


@pytest.fixture
def guarded_run(finished_run):
    """The finished run folder; after the test every file in it must be byte-identical and none added."""
    before = snapshot(finished_run.parent)
    yield finished_run
    after = snapshot(finished_run.parent)
    assert sorted(after) == sorted(before), "files were added to or removed from the output folder"
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"files changed by a failed run: {changed}"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Each case: (id, extra arguments (may use {tmp}), fragments the one error line must name).
# All of them run with --out <the finished run's folder> --run-id X, so a case that wrote anything would show.
CASES = [
    ("unknown-task", ["--tasks", "nosuchtask"], ["nosuchtask", "needle"]),
    ("unknown-task-among-known", ["--tasks", "needle,nosuchtask", *SMALL_GRID], ["nosuchtask", "needle"]),
    ("unknown-backend", ["--backend", "nosuchbackend", *SMALL_GRID], ["nosuchbackend", "hf", "vllm"]),
    ("missing-model", ["--model", "{tmp}/no-such-model", *SMALL_GRID], ["{tmp}/no-such-model"]),
    ("model-folder-without-config", ["--model", "{tmp}", *SMALL_GRID], ["{tmp}", "config.json"]),
    ("max-length-above-window", ["--max-length", "4096", *SMALL_GRID], ["4096", "2048", "--rope-theta"]),
    (
        "needle-length-above-window",
        ["-o", "needle.lengths=[4096]", "-o", "needle.depths=[0,50]"],
        ["needle length 4096", "2048"],
    ),
    ("needle-length-too-short", ["-o", "needle.lengths=[8]", "-o", "needle.depths=[0]"], ["needle length 8"]),
    ("unknown-needle-option", [*SMALL_GRID, "-o", "needle.bogus_option=1"], ["bogus_option"]),
    ("bad-needle-depth", ["-o", "needle.lengths=[256]", "-o", "needle.depths=[150]"], ["150"]),
    ("options-for-task-not-run", [*SMALL_GRID, "-o", "othertask.k=1"], ["othertask"]),
    ("option-without-equals", [*SMALL_GRID, "-o", "needle.lengths"], ["needle.lengths"]),
    ("option-without-task", [*SMALL_GRID, "-o", "lengths=[256]"], ["lengths=[256]"]),
    (
        "option-with-bad-yaml",
        ["-o", "needle.lengths=[256", "-o", "needle.depths=[0,50]"],
        ["needle.lengths=[256"],
    ),
    ("missing-config-file", ["--config", "{tmp}/no-such.yaml", *SMALL_GRID], ["{tmp}/no-such.yaml"]),
    ("malformed-config", ["--config", "{tmp}/bad.yaml", *SMALL_GRID], ["{tmp}/bad.yaml"]),
    ("config-not-a-mapping", ["--config", "{tmp}/list.yaml", *SMALL_GRID], ["{tmp}/list.yaml"]),
    (
        "config-unknown-key",
        ["--config", "{tmp}/unknown.yaml", *SMALL_GRID],
        ["{tmp}/unknown.yaml", "bogus_key"],
    ),
    # Values that look like rich console markup must be printed as given, not styled or crash the printer.
    ("markup-in-task-name", ["--tasks", "[bold]nosuchtask[/bold]"], ["[bold]nosuchtask[/bold]"]),
    ("markup-in-model-path", ["--model", "{tmp}/[/x]", *SMALL_GRID], ["{tmp}/[/x]"]),
]


@pytest.mark.parametrize(("args", "fragments"), [pytest.param(a, f, id=i) for i, a, f in CASES])
def test_bad_input_is_a_one_line_user_error(env, guarded_run, tmp_path, args, fragments):
    _write(tmp_path / "bad.yaml", "tasks: [needle\n  backend: : hf\n")
    _write(tmp_path / "list.yaml", "- needle\n- hf\n")
    _write(tmp_path / "unknown.yaml", "tasks: needle\nbogus_key: 1\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    fragments = [f.replace("{tmp}", str(tmp_path)) for f in fragments]
    inputs = snapshot(tmp_path)

    base = [] if "--backend" in args else ["--backend", "hf"]
    base += [] if "--model" in args else DEMO
    proc = lceval(env, "run", *base, "--out", guarded_run.parent, "--run-id", RUN_ID, *args)

    assert_user_error(proc, *fragments)
    assert snapshot(tmp_path) == inputs, "the failed run changed its input files"


def test_unwritable_output_folder(env, demo_model, tmp_path):
    blocker = _write(tmp_path / "a-regular-file", "keep me\n")
    out = blocker / "runs"
    proc = lceval(env, "run", *DEMO, "--backend", "hf", "--out", out, "--run-id", "r", *SMALL_GRID)
    assert_user_error(proc, str(out), "--out")
    assert blocker.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-regular-file"]


def test_config_file_settings_are_checked_like_flags(env, guarded_run, tmp_path):
    """A YAML file that sets a bad value fails the same way as the flag (here: an unknown backend)."""
    config = _write(
        tmp_path / "run.yaml",
        "model: lceval-demo\ntasks: needle\nbackend: nosuchbackend\n"
        "task_options:\n  needle:\n    lengths: [256]\n    depths: [0]\n",
    )
    proc = lceval(env, "run", "--config", config, "--out", guarded_run.parent, "--run-id", RUN_ID)
    assert_user_error(proc, "nosuchbackend", "hf")


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        pytest.param(
            ["-o", "needle.lengths=[256]", "-o", "needle.depths=[0]"], ["depths"], id="other-depths"
        ),
        pytest.param(
            ["-o", "needle.lengths=[320]", "-o", "needle.depths=[0,50]"], ["lengths"], id="other-lengths"
        ),
        pytest.param([*SMALL_GRID, "--no-chat-template"], ["chat_template"], id="no-chat-template"),
        pytest.param([*SMALL_GRID, "--max-length", "1024"], ["max_length"], id="other-max-length"),
        pytest.param([*SMALL_GRID, "--seed", "7"], ["seed"], id="other-seed"),
    ],
)
def test_rerun_with_other_settings_keeps_the_run(env, guarded_run, options, fragments):
    """Same run id, different settings: refused before anything is written; the run stays byte-identical."""
    samples = (guarded_run / "samples.jsonl").read_bytes()
    manifest = (guarded_run / "manifest.json").read_bytes()
    results = (guarded_run / "results.json").read_bytes()

    proc = lceval(env, "run", *DEMO, "--backend", "hf", "--out", guarded_run.parent, "--run-id", RUN_ID, *options)

    assert_user_error(proc, str(guarded_run), "--run-id", *fragments)
    assert (guarded_run / "samples.jsonl").read_bytes() == samples
    assert (guarded_run / "manifest.json").read_bytes() == manifest
    assert (guarded_run / "results.json").read_bytes() == results


def test_rerun_with_same_settings_resumes(env, finished_run):
    """The control for the cases above: the same settings continue the run (nothing left to generate)."""
    samples = (finished_run / "samples.jsonl").read_bytes()
    sessions = len(json.loads((finished_run / "manifest.json").read_text())["sessions"])
    proc = lceval(
        env, "run", *DEMO, "--backend", "hf", "--out", finished_run.parent, "--run-id", RUN_ID, *SMALL_GRID
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (finished_run / "samples.jsonl").read_bytes() == samples
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert len(manifest["sessions"]) == sessions + 1


def test_model_with_auto_map_needs_trust_remote_code(env, demo_model, tmp_path):
    model = tmp_path / "remote-code-model"
    shutil.copytree(demo_model, model)
    config_file = model / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_x.XConfig",
        "AutoModelForCausalLM": "modeling_x.XForCausalLM",
    }
    config_file.write_text(json.dumps(config, indent=2))
    before = snapshot(model)
    out = tmp_path / "runs"

    proc = lceval(env, "run", "--model", model, "--backend", "hf", "--out", out, "--run-id", "r", *SMALL_GRID)

    assert_user_error(proc, str(model), "--trust-remote-code")
    assert snapshot(model) == before
    assert not out.exists(), "a run folder was created for a refused model"


def test_refused_fresh_run_leaves_no_run_folder(env, demo_model, tmp_path):
    proc = lceval(env, "run", *DEMO, "--backend", "hf", "--out", tmp_path / "runs", "--run-id", "fresh",
                  "-o", "needle.lengths=[8]", "-o", "needle.depths=[0]")
    assert_user_error(proc, "needle length 8")
    assert not (tmp_path / "runs" / "fresh").exists()
