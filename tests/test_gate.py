"""`lceval gate` on real runs of the demo model, and on honest variations of them.

One real run (the committed baseline's own config: needle, passkey, topic, mmlu on the hf backend) is made per
session. The demo model retrieves nothing, so a run of it cannot regress by itself; the gate is tested on:
- an "oracle" copy: each output replaced by the target and rescored with the task's own scorer;
- a "degraded" copy of the oracle: outputs rotated across samples (each gets another sample's answer), rescored;
- the real run against the oracle (a checkpoint that retrieves nothing, against one that retrieves everything);
- copies with missing samples, another prompt or another task version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "results" / "baselines" / "demo"
LETTERS = "ABCD"


# ------------------------------------------------------------------------------------------ building runs


@cache
def _real_run(root: str, cmd: tuple[str, ...], env_items: tuple[tuple[str, str], ...]) -> Path:
    out = Path(root)
    proc = subprocess.run([*cmd, "run", "--config", str(BASELINE / "run.yaml"), "--out", str(out), "--run-id", "real"],
                          env=dict(env_items), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "real"


def real_run(tmp_path_factory, lceval_cmd, cli_env) -> Path:
    """The session's one real run (shared by every test module that asks)."""
    root = tmp_path_factory.getbasetemp() / "gate-real-run"
    return _real_run(str(root), tuple(lceval_cmd), tuple(sorted(cli_env.items())))


def read_records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line]


def write_records(run: Path, records: list[dict[str, Any]]) -> None:
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def copy_run(source: Path, target: Path, run_id: str) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.png", "*.csv", "*.db"))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["run_id"] = run_id
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def oracle_output(record: dict[str, Any]) -> str:
    """What a perfect model answers: the needle sentence, the pass key, the first topic, the right letter."""
    target = record["target"]
    return {"needle": lambda: target["needle"].strip(), "passkey": lambda: target["answer"],
            "topic": lambda: target["topic"], "mmlu": lambda: LETTERS[target]}[record["task"]]()


def rescore(record: dict[str, Any], output: str) -> dict[str, Any]:
    """The record with a new output, scored by the task's own scorer (mmlu: lm-eval's acc, the chosen letter)."""
    from lceval.api import registry
    from lceval.api.task import Sample

    if record["task"] == "mmlu":
        scores = {"acc": float(output == LETTERS[record["target"]])}
    else:
        task = registry.tasks.get(record["task"])({})
        sample = Sample(record["id"], [], 0, record["target"], record["meta"])
        scores = task.score(sample, output)
    return {**record, "output": output, "scores": scores}


def rebuild_results(run: Path) -> None:
    """results.json from the run's (edited) samples, through each task's own aggregate()."""
    from lceval.api import registry

    records = read_records(run)
    results = json.loads((run / "results.json").read_text())
    for name in results["tasks"]:
        mine = [r for r in records if r["task"] == name]
        if name != "mmlu":  # mmlu's aggregate needs lm-eval's task objects; its table is not read by the gate
            results["tasks"][name].update(registry.tasks.get(name)({}).aggregate(mine))
    (run / "results.json").write_text(json.dumps(results))


def make_oracle(real: Path, target: Path) -> Path:
    run = copy_run(real, target, target.name)
    write_records(run, [rescore(r, oracle_output(r)) for r in read_records(real)])
    rebuild_results(run)
    return run


def make_degraded(oracle: Path, target: Path) -> Path:
    """Each sample gets the next sample's (oracle) answer within its task: retrieval broken, format intact."""
    run = copy_run(oracle, target, target.name)
    records = read_records(oracle)
    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_task.setdefault(r["task"], []).append(i)
    rotated = list(records)
    for indices in by_task.values():
        for here, there in zip(indices, indices[1:] + indices[:1], strict=True):
            rotated[here] = rescore(records[here], records[there]["output"])
    write_records(run, rotated)
    rebuild_results(run)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lceval_cmd, cli_env) -> dict[str, Path]:
    real = real_run(tmp_path_factory, lceval_cmd, cli_env)
    base = tmp_path_factory.mktemp("gate")
    oracle = make_oracle(real, base / "oracle")
    return {"real": real, "oracle": oracle, "oracle2": copy_run(oracle, base / "oracle2", "oracle2"),
            "degraded": make_degraded(oracle, base / "degraded")}


# Margins these sample sizes can show: identical runs of n pass/fail pairs show non-inferiority within a margin d
# only when sqrt(n d / (1 - d)) clears the Holm-adjusted normal quantile: 9 needle cells need about 0.4, not 0.05.
SIZED_POLICY = """\
alpha: 0.05
checks:
  - {task: needle, metric: exact_phrase, margin: 0.5}
  - {task: needle, metric: rouge_l_f1, margin: 0.5}
  - {task: passkey, metric: passkey_match, margin: 0.5}
  - {task: topic, metric: accuracy, margin: 0.5}
  - {task: topic, metric: f1, margin: 0.5}
  - {task: mmlu, metric: acc, margin: 0.1}
"""


@pytest.fixture()
def sized_policy(tmp_path) -> Path:
    path = tmp_path / "sized.yaml"
    path.write_text(SIZED_POLICY)
    return path


def gate(cmd, env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "gate", *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------------------------- the tests


def test_oracle_rescoring_is_the_tasks_own_scoring(runs):
    """The oracle is honest: the real run's mmlu scores are reproduced by the letter rule, and oracle scores are 1."""
    real = read_records(runs["real"])
    assert all(rescore(r, r["output"])["scores"] == r["scores"] for r in real if r["task"] == "mmlu")
    oracle = read_records(runs["oracle"])
    assert all(r["scores"].get("exact_phrase", r["scores"].get("passkey_match", r["scores"].get("accuracy",
               r["scores"].get("acc")))) == 1.0 for r in oracle)


def test_identical_small_runs_cannot_show_non_inferiority_within_the_default_margin(runs, lceval_cmd, cli_env):
    """9 identical needle cells say little: the default 0.05 margin is not shown, and the gate says so."""
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", runs["oracle2"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "non-inferiority not shown" in proc.stdout


def test_identical_candidate_passes(runs, lceval_cmd, cli_env, tmp_path, sized_policy):
    verdict = tmp_path / "verdict.json"
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", runs["oracle2"],
                "--policy", sized_policy, "--json", verdict, "--summary", summary)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(verdict.read_text())
    assert data["verdict"] == "pass" and data["exit_code"] == 0 and data["n_failed"] == 0
    assert {c["task"] for c in data["checks"]} == {"needle", "passkey", "topic", "mmlu"}
    assert summary.read_text().startswith("earlier step\n## ✅ lceval gate: pass")  # appended, not overwritten
    assert "| ✅ | mmlu acc | 114 |" in proc.stdout


def test_degraded_candidate_is_rejected(runs, lceval_cmd, cli_env, tmp_path, sized_policy):
    verdict = tmp_path / "verdict.json"
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", runs["degraded"],
                "--policy", sized_policy, "--json", verdict)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads(verdict.read_text())["checks"]}
    for name in ("passkey passkey_match", "topic accuracy", "mmlu acc"):
        assert not checks[name]["passed"] and checks[name]["p_adjusted"] > 0.05
    for name in ("passkey passkey_match", "mmlu acc"):  # (topic's 8 cases: all lost, yet the interval reaches -0.49)
        assert checks[name]["status"] == "regression" and checks[name]["ci"][1] < -checks[name]["margin"]
    # Every needle cell has the same needle: rotating answers changes nothing, and the gate says so.
    assert checks["needle exact_phrase"]["passed"] and checks["needle rouge_l_f1"]["passed"]
    assert "❌ lceval gate: fail" in proc.stdout and "Why it failed" in proc.stdout


def test_checkpoint_that_retrieves_nothing_is_rejected(runs, lceval_cmd, cli_env):
    """The real demo model (retrieves nothing) as a candidate against the oracle: every retrieval check fails."""
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", runs["real"])
    assert proc.returncode == 1
    assert "| ❌ | needle exact_phrase | 9 | 1.0000 | 0.0000 |" in proc.stdout


def test_missing_samples_are_refused(runs, lceval_cmd, cli_env, tmp_path, sized_policy):
    partial = copy_run(runs["oracle"], tmp_path / "partial", "partial")
    records = read_records(partial)
    write_records(partial, [r for r in records if r["id"] != "L512-D50"])
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", partial)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "lacks 1 (first: L512-D50)" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    allowed = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", partial, "--allow-mismatch",
                   "--policy", sized_policy)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "Compared despite mismatches" in allowed.stdout


def test_other_prompts_or_task_versions_are_refused(runs, lceval_cmd, cli_env, tmp_path, sized_policy):
    changed = copy_run(runs["oracle"], tmp_path / "changed", "changed")
    records = read_records(changed)
    records[0]["prompt_hash"] = "0" * 16
    write_records(changed, records)
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", changed)
    assert proc.returncode == 2 and "different prompts (prompt_hash)" in proc.stderr
    assert gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", changed,
                "--allow-mismatch", "--policy", sized_policy).returncode == 0

    versioned = copy_run(runs["oracle"], tmp_path / "versioned", "versioned")
    manifest = json.loads((versioned / "manifest.json").read_text())
    manifest["tasks"]["mmlu"]["version"] = "2"
    (versioned / "manifest.json").write_text(json.dumps(manifest))
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", versioned)
    assert proc.returncode == 2 and "mmlu is task version 1 in the baseline, 2 in the candidate" in proc.stderr

    regridded = copy_run(runs["oracle"], tmp_path / "regridded", "regridded")
    manifest = json.loads((regridded / "manifest.json").read_text())
    manifest["tasks"]["needle"]["settings"]["lengths"] = [256, 512]
    (regridded / "manifest.json").write_text(json.dumps(manifest))
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", regridded)
    assert proc.returncode == 2 and "needle setting lengths differs" in proc.stderr


def test_policy_floors_margins_and_per_length_checks(runs, lceval_cmd, cli_env, tmp_path):
    """A small regression within the margin passes; per-length checks on 3 samples cannot show non-inferiority."""
    slightly = copy_run(runs["oracle"], tmp_path / "slightly", "slightly")
    records = read_records(slightly)
    flipped = [i for i, r in enumerate(records) if r["task"] == "mmlu"][:2]
    for i in flipped:  # two of 114 answers wrong: -0.018, shown to be inside a margin of 0.1
        records[i] = rescore(records[i], LETTERS[(records[i]["target"] + 1) % 4])
    needle = next(i for i, r in enumerate(records) if r["id"] == "L1024-D50")
    records[needle] = rescore(records[needle], "no idea")
    write_records(slightly, records)
    policy = tmp_path / "gate.yaml"
    policy.write_text("alpha: 0.05\nchecks:\n"
                      "  - {task: mmlu, metric: acc, margin: 0.1, min_score: 0.9}\n"
                      "  - {task: needle, metric: exact_phrase, margin: 0.05, by: length}\n"
                      "  - {task: needle, metric: exact_phrase, margin: null, min_score: 0.95, length: 256}\n")
    verdict = tmp_path / "verdict.json"
    proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", slightly, "--policy", policy,
                "--json", verdict)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = json.loads(verdict.read_text())["checks"]
    assert [c["name"] for c in checks] == ["mmlu acc"] + [f"needle exact_phrase [length={n}]"
                                                          for n in (256, 512, 1024, 256)]
    mmlu, at256, at512, at1024, floor = checks
    assert mmlu["passed"] and mmlu["difference"] == pytest.approx(-2 / 114)
    assert mmlu["test"] == "McNemar / Tango score"
    assert at256["status"] == at512["status"] == at1024["status"] == "not shown"  # 3 samples each
    assert floor["margin"] is None and floor["p_value"] is None and floor["passed"]
    assert "non-inferiority not shown" in proc.stdout


def test_bad_policies_are_one_sentence(runs, lceval_cmd, cli_env, tmp_path):
    cases = {
        "checks:\n  - {task: needle, metric: exact_phrase, margn: 0.1}\n": "unknown key 'margn'",
        "checks:\n  - {task: nope, metric: acc}\n": "no nope samples",
        "checks:\n  - {task: needle, metric: acc}\n": "no metric 'acc'",
        "checks:\n  - {task: needle, metric: exact_phrase, by: category}\n": "no breakdown 'category'",
        "checks:\n  - {task: needle, metric: exact_phrase, length: 333}\n": "no length '333'",
        "alpha: 2\nchecks:\n  - {task: needle, metric: exact_phrase}\n": "alpha 2",
    }
    for text, message in cases.items():
        policy = tmp_path / "policy.yaml"
        policy.write_text(text)
        proc = gate(lceval_cmd, cli_env, "--baseline", runs["oracle"], "--candidate", runs["oracle2"],
                    "--policy", policy)
        assert proc.returncode == 2 and message in proc.stderr, (text, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


def test_update_baseline_promotes_a_complete_run(runs, lceval_cmd, cli_env, tmp_path, sized_policy):
    target = tmp_path / "baselines" / "mine"
    proc = gate(lceval_cmd, cli_env, "--candidate", runs["real"], "--baseline", target, "--update-baseline")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "results.json", "samples.jsonl"]
    assert json.loads((target / "manifest.json").read_text())["baseline"]["promoted_from"] == str(runs["real"])
    again = gate(lceval_cmd, cli_env, "--baseline", target / "results.json", "--candidate", runs["real"],
                 "--policy", sized_policy)
    assert again.returncode == 0, again.stdout + again.stderr  # a baseline is named by its folder or results file


def test_committed_baseline_gates_a_fresh_run(runs, lceval_cmd, cli_env, tmp_path):
    """What scripts/ci-gate.sh does: a fresh run of the committed config against the committed baseline."""
    verdict = tmp_path / "verdict.json"
    proc = gate(lceval_cmd, cli_env, "--baseline", BASELINE, "--candidate", runs["real"],
                "--policy", BASELINE / "gate.yaml", "--json", verdict)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(verdict.read_text())["n_checks"] >= 6
