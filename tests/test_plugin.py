"""Third-party plugins through the entry-point groups `lceval.tasks` and `lceval.backends`.

Throwaway distributions are written to a temporary folder, installed with pip into a `--target` folder (never
into the real environment) and made visible to `lceval` subprocesses through PYTHONPATH only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ECHO_DESCRIPTION = "Echo plugin task: asks the model to repeat one word."
ECHO_BACKEND_DOC = "Echo plugin backend: answers every prompt with the same text."
BROKEN_MESSAGE = "lceval_broken_plugin fails on import on purpose"

ECHO_SOURCE = f'''
"""A third-party lceval task and backend, installed only for the test."""

from __future__ import annotations

from lceval.api.backend import Backend, Generation
from lceval.api.prompting import encode
from lceval.api.settings import Count, settings_class
from lceval.api.task import Axis, Metric, Sample, Task

WORDS = ["alpha", "beta", "gamma", "delta"]


class EchoTask(Task):
    name = "echo"
    version = "3"
    description = "{ECHO_DESCRIPTION}"
    # Declared, not hand-aggregated: the default aggregation, compare, report and gate read these.
    metrics = (Metric("nonempty", "Answered at all", pass_fail=True),
               Metric("exact", "Repeated the word", pass_fail=True))
    axes = (Axis("word", "word"),)

    def settings(self):
        return {{"n": int(self.options.get("n", 3))}}

    def build_samples(self, ctx):
        turn = ctx.user_turn()
        samples = []
        for i, word in enumerate(WORDS[: self.settings()["n"]]):
            prompt = turn.wrap(encode(ctx.tokenizer, f"Repeat the word {{word}} once."))
            samples.append(Sample(f"echo-{{i}}", prompt, 8, word, {{"word": word}}))
        return samples

    def score(self, sample, output):
        return {{"nonempty": float(bool(output.strip())),
                 "exact": float(output.strip().lower() == sample.target)}}


@settings_class
class EchoOptions:
    reply: str = "echo"  # what it answers: changes the outputs
    workers: Count = 1  # how it works: changes none


class EchoBackend(Backend):
    """{ECHO_BACKEND_DOC}"""

    name = "echo-backend"
    options_class = EchoOptions
    neutral_options = frozenset({{"workers"}})

    @property
    def tokenizer(self):
        return None

    def generate(self, requests):
        for index, request in enumerate(requests):
            reply = self.settings.extra.get("reply", "echo")  # its own option (-M reply=...), unread by lceval
            yield index, Generation([], f"{{reply}} {{len(request.prompt_ids)}}", "length")

    def identity(self):
        return {{"name": self.name, "versions": {{"lceval_echo_plugin": "0.1"}}}}
'''


def _pyproject(name: str, entry_points: dict[str, dict[str, str]]) -> str:
    lines = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{name}"',
        'version = "0.1"',
        "",
    ]
    for group, items in entry_points.items():
        lines.append(f'[project.entry-points."{group}"]')
        lines += [f'{key} = "{value}"' for key, value in items.items()]
        lines.append("")
    lines += ["[tool.setuptools]", f'py-modules = ["{name}"]', ""]
    return "\n".join(lines)


def _write_package(root: Path, name: str, source: str, entry_points: dict[str, dict[str, str]]) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(_pyproject(name, entry_points), encoding="utf-8")
    (root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def base_env(cli_env) -> dict[str, str]:
    """The shared subprocess environment, without any PYTHONPATH of the caller."""
    environ = dict(cli_env)
    environ.pop("PYTHONPATH", None)
    return environ


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A --target folder holding two plugin distributions: a working one and one that fails on import."""
    src = tmp_path_factory.mktemp("plugin-src")
    echo = _write_package(
        src / "echo",
        "lceval_echo_plugin",
        ECHO_SOURCE,
        {
            "lceval.tasks": {"echo": "lceval_echo_plugin:EchoTask"},
            "lceval.backends": {"echo-backend": "lceval_echo_plugin:EchoBackend"},
        },
    )
    broken = _write_package(
        src / "broken",
        "lceval_broken_plugin",
        f"raise ImportError({BROKEN_MESSAGE!r})\n",
        {
            "lceval.tasks": {"broken": "lceval_broken_plugin:BrokenTask"},
            "lceval.backends": {"broken-backend": "lceval_broken_plugin:BrokenBackend"},
        },
    )
    target = tmp_path_factory.mktemp("plugin-site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(echo),
            str(broken),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip could not install the throwaway plugins:\n{proc.stdout}\n{proc.stderr}")
    assert (target / "lceval_echo_plugin.py").exists()
    return target


@pytest.fixture(scope="module")
def env(base_env, plugin_site) -> dict[str, str]:
    return {**base_env, "PYTHONPATH": str(plugin_site)}


def lceval(env: dict[str, str], *args, columns: int | None = None) -> subprocess.CompletedProcess:
    lceval_bin = shutil.which("lceval")
    command = [lceval_bin] if lceval_bin else [sys.executable, "-m", "lceval"]
    environ = dict(env)
    if columns is not None:  # `lceval tasks` prints a table; wide enough that no cell wraps
        environ["COLUMNS"] = str(columns)
    return subprocess.run(
        [*command, *map(str, args)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def _rows(table_output: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> description from the box table of `lceval tasks`."""
    rows = {}
    for line in table_output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        cells = cells[1:-1] if len(cells) == 5 else []
        if len(cells) == 3 and cells[0] in ("task", "backend") and cells[1]:
            rows[(cells[0], cells[1])] = cells[2]
    return rows


def test_plugins_are_not_installed_in_the_real_environment(base_env):
    """The control: without PYTHONPATH the plugins are unknown (so nothing leaked into site-packages)."""
    proc = lceval(base_env, "tasks", columns=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(proc.stdout)
    assert ("task", "needle") in rows
    assert ("task", "echo") not in rows
    assert ("task", "broken") not in rows


def test_tasks_lists_plugins_with_descriptions(env):
    proc = lceval(env, "tasks", columns=400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    rows = _rows(proc.stdout)
    assert rows.get(("task", "echo")) == ECHO_DESCRIPTION, rows
    assert rows.get(("backend", "echo-backend")) == ECHO_BACKEND_DOC, rows
    # The built-ins are still there, with their own descriptions.
    assert ("task", "needle") in rows and rows[("task", "needle")]
    assert ("backend", "hf") in rows and ("backend", "vllm") in rows


def test_tasks_shows_a_broken_plugin_without_breaking_the_list(env):
    proc = lceval(env, "tasks", columns=400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    rows = _rows(proc.stdout)
    for kind, name in (("task", "broken"), ("backend", "broken-backend")):
        description = rows.get((kind, name), "")
        assert "failed to load" in description, rows
        assert BROKEN_MESSAGE in description, rows
        assert "lceval_broken_plugin:" in description, rows  # names the entry point's target
    assert ("task", "needle") in rows and ("task", "echo") in rows


def _run_dir_contents(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    results = json.loads((run_dir / "results.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    records = [
        json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines() if line.strip()
    ]
    return results, manifest, records


def test_run_plugin_task_on_hf(env, tmp_path):
    out = tmp_path / "runs"
    proc = lceval(env, "run", "--model", "lceval-demo", "--tasks", "echo", "--backend", "hf", "--out", out,
                  "--run-id", "p")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output

    results, manifest, records = _run_dir_contents(out / "p")
    echo = results["tasks"]["echo"]
    assert list(results["tasks"]) == ["echo"]
    assert echo["version"] == "3"
    assert echo["n_samples"] == echo["n_expected"] == 3
    assert set(echo["metrics"]) == {"nonempty", "exact"}
    assert all(0.0 <= v <= 1.0 for v in echo["metrics"].values())

    assert len(records) == 3
    assert sorted(r["id"] for r in records) == ["echo-0", "echo-1", "echo-2"]
    assert {r["task"] for r in records} == {"echo"}
    assert {r["target"] for r in records} == {"alpha", "beta", "gamma"}
    for record in records:
        assert set(record["scores"]) == {"nonempty", "exact"}
        assert record["output_tokens"] <= 8
        assert record["task_version"] == "3"

    assert manifest["status"] == "complete"
    assert manifest["tasks"]["echo"] == {"version": "3", "settings": {"n": 3}, "n_samples": 3}
    assert manifest["backend"]["name"] == "hf"
    # The results table printed at the end names the plugin task and its metrics.
    assert "echo" in proc.stdout and "nonempty" in proc.stdout


def test_run_plugin_task_on_plugin_backend_and_resume(env, tmp_path):
    """Both plugin groups at once, with a task option; a second session with the same id has nothing to do."""
    out = tmp_path / "runs"
    args = [
        "run",
        "--model",
        "lceval-demo",
        "--tasks",
        "echo",
        "--backend",
        "echo-backend",
        "-o",
        "echo.n=2",
        "--out",
        out,
        "--run-id",
        "b",
    ]
    proc = lceval(env, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    results, manifest, records = _run_dir_contents(out / "b")
    assert results["tasks"]["echo"]["n_samples"] == results["tasks"]["echo"]["n_expected"] == 2
    assert results["tasks"]["echo"]["metrics"] == {"nonempty": 1.0, "exact": 0.0}
    assert len(records) == 2
    assert all(r["output"].startswith("echo ") and r["finish_reason"] == "length" for r in records)
    assert manifest["backend"]["name"] == "echo-backend"
    assert manifest["backend"]["requested"] == "echo-backend"
    assert manifest["tasks"]["echo"]["settings"] == {"n": 2}

    samples = (out / "b" / "samples.jsonl").read_bytes()
    again = lceval(env, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "b" / "samples.jsonl").read_bytes() == samples
    assert len(json.loads((out / "b" / "manifest.json").read_text())["sessions"]) == 2


def test_plugin_task_axis_is_a_breakdown_in_results_compare_report_and_gate(env, tmp_path):
    """A plugin task that declares an axis of its own (`word`) gets it everywhere without touching lceval: its
    results' `by_word`, a `word` breakdown in compare and in the report, and a gate check `by: word`."""
    out = tmp_path / "runs"
    for run_id in ("a", "b"):
        proc = lceval(env, "run", "--model", "lceval-demo", "--tasks", "echo", "--backend", "echo-backend", "--out",
                      out, "--run-id", run_id)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    results, manifest, _ = _run_dir_contents(out / "a")
    assert results["tasks"]["echo"]["by_word"] == {w: {"nonempty": 1.0, "exact": 0.0} for w in ("alpha", "beta",
                                                                                                "gamma")}
    assert manifest["declarations"]["echo"]["axes"] == [{"name": "word", "key": "word", "labels": None}]

    proc = lceval(env, "compare", out / "a", out / "b", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert {(r["metric"], r["breakdown"], r["group"]) for r in rows if r["breakdown"] == "word"} == {
        (m, "word", w) for m in ("nonempty", "exact") for w in ("alpha", "beta", "gamma")}
    assert {r["kind"] for r in rows} == {"binary"}  # both metrics declared pass/fail

    report = tmp_path / "report.md"
    proc = lceval(env, "report", out / "a", out / "b", "--output", report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = report.read_text()
    assert "word alpha" in text and "word gamma" in text, text

    policy = tmp_path / "gate.yaml"
    # One sample per word shows no non-inferiority; a floor per word is what such a check can hold.
    policy.write_text("checks:\n  - {task: echo, metric: nonempty, by: word, margin: null, min_score: 0.5}\n")
    proc = lceval(env, "gate", "--baseline", out / "a", "--candidate", out / "b", "--policy", policy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f"echo nonempty [word={w}]" in proc.stdout for w in ("alpha", "beta", "gamma")), proc.stdout


def test_a_plugin_backend_gets_its_own_settings_unread_and_they_are_part_of_the_fingerprint(env, tmp_path):
    """`-M KEY=VALUE` reaches the backend as given (BackendSettings.extra), checked by the options class it
    declares; another value of an option that changes outputs refuses to resume, of a neutral one does not."""
    out = tmp_path / "runs"
    args = ["run", "--model", "lceval-demo", "--tasks", "echo", "--backend", "echo-backend", "-o", "echo.n=1",
            "--out", out, "--run-id", "m"]
    proc = lceval(env, *args, "-M", "reply=hello", "-M", "workers=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, manifest, records = _run_dir_contents(out / "m")
    assert records[0]["output"].startswith("hello ")
    assert manifest["config"]["backend_options"] == {"reply": "hello", "workers": 2}
    assert manifest["fingerprint"]["backend_options"] == {"reply": "hello"}
    again = lceval(env, *args, "-M", "reply=hello", "-M", "workers=4")
    assert again.returncode == 0, again.stdout + again.stderr
    other = lceval(env, *args, "-M", "reply=bye")
    assert other.returncode == 2
    assert "backend_options.reply" in other.stderr and "use a new --run-id" in other.stderr, other.stderr
    bad = lceval(env, *args, "-M", "workers=0")
    assert bad.returncode == 2 and "-M workers 0 must be a whole number, 1 or more." in bad.stderr, bad.stderr
    typo = lceval(env, *args, "-M", "replay=hi")
    assert typo.returncode == 2 and "-M replay is not an option of backend echo-backend" in typo.stderr


def test_broken_plugin_does_not_break_builtin_run(env, tmp_path):
    out = tmp_path / "runs"
    proc = lceval(
        env,
        "run",
        "--model",
        "lceval-demo",
        "--tasks",
        "needle",
        "--backend",
        "hf",
        "-o",
        "needle.lengths=[256]",
        "-o",
        "needle.depths=[0,50]",
        "--out",
        out,
        "--run-id",
        "n",
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    results, _, records = _run_dir_contents(out / "n")
    assert results["tasks"]["needle"]["n_samples"] == 3  # 2 cells and the length's no-needle control
    assert len(records) == 3


@pytest.mark.parametrize(
    ("flag", "value", "kind"), [("--tasks", "broken", "task"), ("--backend", "broken-backend", "backend")]
)
def test_running_a_broken_plugin_is_a_user_error(env, tmp_path, flag, value, kind):
    out = tmp_path / "runs"
    args = ["run", "--model", "lceval-demo", "--out", out, "--run-id", "x", flag, value]
    args += (
        ["--tasks", "needle", "-o", "needle.lengths=[256]", "-o", "needle.depths=[0]"]
        if kind == "backend"
        else []
    )
    proc = lceval(env, *args)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), proc.stderr
    for fragment in (f"{kind} plugin {value!r}", "failed to load", BROKEN_MESSAGE):
        assert fragment in lines[-1], proc.stderr
    assert not out.exists()
