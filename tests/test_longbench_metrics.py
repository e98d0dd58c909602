"""LongBench v1 / LongBench-E scoring against the official scorer.

Every expected number below came from running the official THUDM/LongBench scorer (LongBench/metrics.py and
LongBench/eval.py at commit 2e00731f8d0bff23dc4325161044d0ed8af94c1e) on the same inputs, once, outside this
repository, with rouge 1.0.1, jieba 0.42.1 and fuzzywuzzy 0.18.0 without python-Levenshtein, on CPython 3.11.
Single metric values: metrics.<name>(prediction, ground_truth, all_classes=...). Sample values: eval.py's
per-sample rule (first line for trec/triviaqa/samsum/lsht, max over answers). Folder results: `python eval.py
--model M` (and `--e`) on the files `write_pred_files` writes, run as a script (the ROUGE recursion cut-off
depends on the stack depth, and the official numbers are those of eval.py run at top level).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lceval.api.errors import UserError
from lceval.metrics import longbench as lb

TREC = ["Description", "Entity", "Human being", "Abbreviation", "Location", "Numeric value"]
LSHT = ["体育", "育", "体育新闻", "新闻", "财经"]

# (metric, prediction, ground truth, all_classes, official value)
METRIC_CASES = [
    ("qa_f1_score", "", "Paris", None, 0),
    ("qa_f1_score", "The Eiffel-Tower, Paris!", "eiffel tower paris", None, 0.4),  # "-" deleted, not a space
    ("qa_f1_score", "the a an", "the", None, 0),  # only articles: both sides empty
    ("qa_f1_score", "Paris, France.", "paris", None, 0.6666666666666666),
    ("qa_f1_score", "an apple and the Apple", "apple apple", None, 0.8),  # multiset overlap
    ("qa_f1_score", "It's theatre", "its theatre", None, 1.0),  # "the" inside a word stays
    ("qa_f1_score", "  PARIS\n\t", "Paris", None, 1.0),
    ("qa_f1_zh_score", "首都北京", "北京", None, 0),  # jieba keeps 首都北京 as one word
    ("qa_f1_zh_score", "北京。", "北京", None, 1.0),
    ("qa_f1_zh_score", "《红楼梦》", "红楼梦", None, 0.6666666666666666),  # 》 is punctuation there, 《 is not
    ("qa_f1_zh_score", "", "北京", None, 0),
    ("qa_f1_zh_score", "ABC abc", "abc", None, 0.6666666666666666),
    ("qa_f1_zh_score", "他出生于1990年，在上海工作。", "1990年", None, 0.4444444444444445),
    ("rouge_score", "", "a b", None, 0.0),  # "Hypothesis is empty." -> 0
    ("rouge_score", "...", "a b", None, 0.0),
    ("rouge_score", "a b", "", None, 0.0),
    ("rouge_score", "the cat sat on the mat", "the cat sat on the mat", None, 0.999999995),  # the +1e-8
    ("rouge_score", "The cat sat.", "the cat sat", None, 0.6666666616666668),  # case-sensitive
    ("rouge_score", "the cat sat. on the mat", "the cat. sat on the mat today", None, 0.7272727223140496),
    ("rouge_zh_score", "我爱北京天安门", "我爱北京", None, 0.8571428522448981),
    ("rouge_zh_score", "", "北京", None, 0.0),
    ("rouge_zh_score", "会议讨论了预算。然后决定了下一步计划。", "会议讨论了明年的预算和计划。", None,
     0.6315789423822715),
    ("classification_score", "ABC", "ABC", ["A", "AB", "ABC"], 0.5),  # remove-while-iterating skips AB
    ("classification_score", "Human being or Entity", "Entity", TREC, 0.5),
    ("classification_score", "Location", "Entity", TREC, 0.0),
    ("classification_score", "nothing", "Entity", TREC, 0.0),
    ("classification_score", "体育新闻", "体育新闻", ["体育", "体育新闻", "新闻"], 1.0),
    ("classification_score", "体育新闻", "体育新闻", ["体育", "育", "体育新闻", "新闻"], 0.5),
    ("classification_score", "财经", "财经", ["体育", "财经", "科技"], 1.0),
    ("retrieval_score", "Paragraph 3, not 4", "Paragraph 3", None, 0.5),
    ("retrieval_score", "Paragraph 13", "Paragraph 3", None, 0.0),
    ("retrieval_score", "no number here", "Paragraph 3", None, 0.0),
    ("retrieval_score", "3 3 3", "Paragraph 3", None, 1.0),
    ("retrieval_score", "Paragraph 03", "Paragraph 3", None, 0.0),  # compared as strings
    ("retrieval_zh_score", "段落3和段落4", "段落3", None, 0.5),
    ("retrieval_zh_score", "答案是段落12", "段落12", None, 1.0),
    ("retrieval_zh_score", "没有编号", "段落12", None, 0.0),
    ("count_score", "There are 15 unique paragraphs out of 20", "15", None, 0.5),
    ("count_score", "15", "15", None, 1.0),
    ("count_score", "fifteen", "15", None, 0.0),
    ("count_score", "1, 2, 15, 15", "15", None, 0.5),
    ("code_sim_score", "\n\n# comment\n    return x", "    return x", None, 1.0),
    ("code_sim_score", "```python\nx = 1  # set\ny = 2\n```", "y = 2", None, 1.0),  # '#' anywhere skips a line
    ("code_sim_score", "// comment\nint a = b;", "int a = b;", None, 1.0),
    ("code_sim_score", "# only a comment", "x = 1", None, 0.0),
    ("code_sim_score", "", "", None, 1.0),  # fuzz.ratio("", "") is 100
    ("code_sim_score", "", "x = 1", None, 0.0),
    ("code_sim_score", "   return x", "return x", None, 0.84),  # indentation kept
    ("code_sim_score", "url = 'http://x'\nreturn url", "return url", None, 1.0),  # '//' anywhere skips a line
    ("code_sim_score", "self.assertEqual(a, b)", "self.assertEquals(a, c)", None, 0.93),
    ("code_sim_score", "x = 1\r\ny = 2", "x = 1", None, 0.91),  # split on \n only
]

# (dataset, prediction, answers, all_classes, official per-sample value)
SAMPLE_CASES = [
    ("trec", "\n\nDescription\nHuman being", ["Description"], TREC, 1.0),
    ("trec", "Type: Human being", ["Human being"], TREC, 1.0),
    ("triviaqa", "\nParis\nLondon", ["London"], None, 0.0),  # first line only
    ("narrativeqa", "\nParis\nLondon", ["London"], None, 0.6666666666666666),  # whole output
    ("triviaqa", "Answer: Paris, France", ["France", "Paris, France", "paris"], None, 0.8),  # max over answers
    ("samsum", "  Tom calls Ann.\nShe answers.", ["Tom calls Ann."], None, 0.999999995),  # spaces not stripped
    ("gov_report", "  Tom calls Ann.\nShe answers.", ["Tom calls Ann."], None, 0.7499999953125),
    ("lsht", "\n财经\n体育", ["体育"], ["体育", "财经", "科技"], 0.0),
    ("hotpotqa", "Paris", [], None, 0.0),
    ("lcc", "\n    return x  # done\n    return y", ["    return y"], None, 1.0),
]

# eval.py's dataset2metric at the pinned commit.
OFFICIAL_DATASET_METRIC = {
    "narrativeqa": "qa_f1_score", "qasper": "qa_f1_score", "multifieldqa_en": "qa_f1_score",
    "multifieldqa_zh": "qa_f1_zh_score", "hotpotqa": "qa_f1_score", "2wikimqa": "qa_f1_score",
    "musique": "qa_f1_score", "dureader": "rouge_zh_score", "gov_report": "rouge_score", "qmsum": "rouge_score",
    "multi_news": "rouge_score", "vcsum": "rouge_zh_score", "trec": "classification_score",
    "triviaqa": "qa_f1_score", "samsum": "rouge_score", "lsht": "classification_score",
    "passage_retrieval_en": "retrieval_score", "passage_count": "count_score",
    "passage_retrieval_zh": "retrieval_zh_score", "lcc": "code_sim_score", "repobench-p": "code_sim_score",
}


def long_pair(total: int) -> tuple[str, str]:
    """(hypothesis, reference) of one sentence each whose LCS rebuild in `rouge` recurses about `total` deep.

    The hypothesis is "h1 h2", the reference "h1 r1 .. r(total-2)": they share one word, so the score is small but
    not 0 unless the recursion limit is hit; the LCS table stays small (3 x total), so this is fast.
    """
    return "h1 h2", " ".join(["h1"] + [f"r{k}" for k in range(1, total - 1)])


# The official scorer (called as eval.py calls it, from a script run at top level) scores these and gives 0.0 one
# word later: rouge_score with total 990 -> 0.0020181634309593614, 991 -> 0.0; rouge_zh_score (one frame deeper)
# with 989 -> 0.0020202019798796047, 990 -> 0.0.
ROUGE_CUTOFF = {"rouge_score": (990, 0.0020181634309593614), "rouge_zh_score": (989, 0.0020202019798796047)}


def _line(pred: str, answers: list[str], length: int, all_classes: list[str] | None = None) -> dict:
    return {"pred": pred, "answers": answers, "all_classes": all_classes, "length": length}


def pred_files() -> dict[str, list[dict]]:
    en_ok, en_zero = long_pair(990), long_pair(991)
    zh_ok, zh_zero = long_pair(989), long_pair(990)
    return {
        "narrativeqa": [_line("The Eiffel-Tower, Paris!", ["eiffel tower paris", "Paris"], 3000),
                        _line("", ["x"], 5000), _line("a knight", ["The knight", "sir knight"], 9000)],
        "multifieldqa_zh": [_line("首都北京", ["北京"], 1000), _line("《红楼梦》", ["红楼梦"], 4500),
                            _line("他出生于1990年，在上海工作。", ["1990年"], 12000)],
        "dureader": [_line("会议讨论了预算。然后决定了下一步计划。", ["会议讨论了明年的预算和计划。"], 2000),
                     _line("我爱北京天安门", ["我爱北京", "北京"], 6000)],
        "gov_report": [_line(en_ok[0], [en_ok[1]], 100), _line(en_zero[0], [en_zero[1]], 200),
                       _line("", ["a b"], 5000), _line("the cat sat. on the mat", ["the cat. sat on the mat today"],
                                                      8000)],
        "vcsum": [_line(zh_ok[0], [zh_ok[1]], 3999), _line(zh_zero[0], [zh_zero[1]], 4000)],  # no 8k+: nan
        "trec": [_line("\n\nDescription\nHuman being", ["Description"], 4100, TREC),
                 _line("Human being or Entity", ["Entity"], 7999, TREC), _line("Location", ["Entity"], 8000, TREC)],
        "lsht": [_line("体育新闻", ["体育新闻"], 100, LSHT), _line("\n财经\n体育", ["体育"], 9000, LSHT)],
        "triviaqa": [_line("\nParis\nLondon", ["London"], 500),
                     _line("Answer: Paris, France", ["France", "Paris, France", "paris"], 5000)],
        "samsum": [_line("  Tom calls Ann.\nShe answers.", ["Tom calls Ann."], 8500)],
        "passage_count": [_line("There are 15 unique paragraphs out of 20", ["15"], 300), _line("15", ["15"], 300)],
        "passage_retrieval_en": [_line("Paragraph 3, not 4", ["Paragraph 3"], 4000),
                                 _line("Paragraph 13", ["Paragraph 3"], 10000)],
        "passage_retrieval_zh": [_line("段落3和段落4", ["段落3"], 6000)],
        "lcc": [_line("\n\n# comment\n    return x", ["    return x"], 1500),
                _line("   return x", ["return x"], 6000)],
        "repobench-p": [_line("// comment\nint a = b;", ["int a = b;"], 9000),
                        _line("self.assertEqual(a, b)", ["self.assertEquals(a, c)"], 12000)],
    }


def write_pred_files(folder: Path) -> Path:
    """The prediction files, written as pred.py writes them (one json.dumps(..., ensure_ascii=False) per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    for dataset, lines in pred_files().items():
        with open(folder / f"{dataset}.jsonl", "w", encoding="utf-8") as handle:
            for line in lines:
                json.dump(line, handle, ensure_ascii=False)
                handle.write("\n")
    return folder


# result.json of the official eval.py on write_pred_files' folder (key order aside: eval.py follows os.listdir).
NAN = math.nan
OFFICIAL_RESULT = {
    "dureader": 74.44,
    "gov_report": 18.23,
    "lcc": 92.0,
    "lsht": 25.0,
    "multifieldqa_zh": 37.04,
    "narrativeqa": 55.56,
    "passage_count": 75.0,
    "passage_retrieval_en": 25.0,
    "passage_retrieval_zh": 50.0,
    "repobench-p": 96.5,
    "samsum": 100.0,
    "trec": 50.0,
    "triviaqa": 40.0,
    "vcsum": 0.1,
}
OFFICIAL_RESULT_E = {
    "dureader": {"0-4k": 63.16, "4-8k": 85.71, "8k+": NAN},
    "gov_report": {"0-4k": 0.1, "4-8k": 0.0, "8k+": 72.73},
    "lcc": {"0-4k": 100.0, "4-8k": 84.0, "8k+": NAN},
    "lsht": {"0-4k": 50.0, "4-8k": NAN, "8k+": 0.0},
    "multifieldqa_zh": {"0-4k": 0.0, "4-8k": 66.67, "8k+": 44.44},
    "narrativeqa": {"0-4k": 66.67, "4-8k": 0.0, "8k+": 100.0},
    "passage_count": {"0-4k": 75.0, "4-8k": NAN, "8k+": NAN},
    "passage_retrieval_en": {"0-4k": NAN, "4-8k": 50.0, "8k+": 0.0},
    "passage_retrieval_zh": {"0-4k": NAN, "4-8k": 50.0, "8k+": NAN},
    "repobench-p": {"0-4k": NAN, "4-8k": NAN, "8k+": 96.5},
    "samsum": {"0-4k": NAN, "4-8k": NAN, "8k+": 100.0},
    "trec": {"0-4k": NAN, "4-8k": 75.0, "8k+": 0.0},
    "triviaqa": {"0-4k": 0.0, "4-8k": 80.0, "8k+": NAN},
    "vcsum": {"0-4k": 0.2, "4-8k": 0.0, "8k+": NAN},
}


def expected_file_text(folder: Path, expected: dict) -> str:
    """eval.py's result.json for `folder`: its keys in the folder's listing order, json.dump(indent=4,
    ensure_ascii=False), no final newline."""
    order = [name[: -len(".jsonl")] for name in os.listdir(folder) if name.endswith(".jsonl")]
    return json.dumps({name: expected[name] for name in order}, ensure_ascii=False, indent=4)


# ------------------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(("metric", "prediction", "ground_truth", "all_classes", "expected"), METRIC_CASES)
def test_metric_matches_official(metric, prediction, ground_truth, all_classes, expected):
    value = lb.METRICS[metric](prediction, ground_truth, all_classes=all_classes)
    assert value == expected
    assert isinstance(value, (int, float))


@pytest.mark.parametrize(("dataset", "prediction", "answers", "all_classes", "expected"), SAMPLE_CASES)
def test_sample_matches_official(dataset, prediction, answers, all_classes, expected):
    assert lb.score_sample(dataset, prediction, answers, all_classes) == expected


@pytest.mark.parametrize("metric", ["rouge_score", "rouge_zh_score"])
def test_rouge_recursion_cutoff_is_the_official_one_at_any_stack_depth(metric):
    total, official = ROUGE_CUTOFF[metric]

    def nested(depth: int) -> tuple[float, float]:
        if depth:
            return nested(depth - 1)
        return lb.METRICS[metric](*long_pair(total)), lb.METRICS[metric](*long_pair(total + 1))

    limit = sys.getrecursionlimit()
    for depth in (0, 300, 900):
        assert nested(depth) == (official, 0.0), depth
    assert sys.getrecursionlimit() == limit


def test_rouge_long_text_with_sentences_still_scores():
    # Official: rouge_score("h1 h2", <1199 words, one sentence>) == 0.0 (recursion limit); the same words cut into
    # 35-word sentences score 0.001665278900971367 (the LCS is rebuilt per sentence).
    hypothesis, reference = long_pair(1200)
    assert lb.rouge_score(hypothesis, reference) == 0.0
    words = reference.split(" ")
    sentences = ". ".join(" ".join(words[i:i + 35]) for i in range(0, len(words), 35))
    assert lb.rouge_score(hypothesis, sentences) == 0.001665278900971367


def test_every_metric_is_registered_and_the_spec_uses_the_official_mapping():
    assert set(lb.METRICS) == set(OFFICIAL_DATASET_METRIC.values())
    assert {d: lb.dataset_metric(d) for d in lb.spec()} == OFFICIAL_DATASET_METRIC


def test_postprocess_first_line_datasets_only():
    text = "\n\n  first\nsecond"
    for dataset in lb.spec():
        expected = "  first" if dataset in {"trec", "triviaqa", "samsum", "lsht"} else text
        assert lb.postprocess(dataset, text) == expected
    with pytest.raises(UserError, match="unknown LongBench dataset 'nope'.*narrativeqa"):
        lb.postprocess("nope", text)


def test_difflib_ratio_is_fuzzywuzzy_ratio():
    from fuzzywuzzy import fuzz

    pairs = [("", ""), ("a", ""), ("abc", "abd"), ("    return x", "return x"), ("中文 x", "中文 y"), ("é", "e")]
    for first, second in pairs:
        assert lb._difflib_ratio(first, second) == fuzz.ratio(first, second)


# --------------------------------------------------------------------------------------------------- aggregation


def test_dataset_and_bucket_means_round_as_eval_py():
    # eval.py's scorer sums left to right and rounds a float; scorer_e rounds numpy's mean with numpy's rounding.
    # Official values: scorer(...) on a metric that returns float(ground_truth), and scorer_e(...) likewise.
    scores = [0.9259, 0.926, 0.1, 0.2, 0.7819]
    assert lb.percent_mean(scores) == 58.68
    assert lb.percent_mean([0.9259, 0.926]) == 92.59
    assert lb.bucket_scores(scores, [10, 3999, 4000, 8000, 9999]) == {"0-4k": 92.6, "4-8k": 10.0, "8k+": 49.1}
    empty = lb.bucket_scores([1.0], [4500])
    assert empty["4-8k"] == 100.0 and math.isnan(empty["0-4k"]) and math.isnan(empty["8k+"])
    assert list(empty) == ["0-4k", "4-8k", "8k+"]


def test_score_dataset_and_score_dataset_e():
    preds = ["Paris", "London", "\nRome"]
    answers = [["Paris"], ["Paris"], ["Rome", "rome"]]
    assert lb.score_dataset("triviaqa", preds, answers, None) == 66.67
    assert lb.score_dataset_e("triviaqa", preds, answers, None, [100, 5000, 9000]) == {
        "0-4k": 100.0, "4-8k": 0.0, "8k+": 100.0}


def test_average_over_datasets_and_categories():
    scores = {"narrativeqa": 20.0, "qasper": 40.0, "hotpotqa": 50.0, "lcc": 60.0, "multifieldqa_zh": 10.0}
    result = lb.average(scores)
    assert result["by_category"] == {"Single-Document QA": 23.33, "Multi-Document QA": 50.0, "Code Completion": 60.0}
    assert result["metrics"] == {
        "average_over_datasets": 36.0,
        "average_over_categories": round((70 / 3 + 50 + 60) / 3, 2),
        "average_over_categories_en": round((30 + 50 + 60) / 3, 2),  # README: English datasets plus code
        "average_over_categories_zh": round((10 + 60) / 2, 2),
    }
    assert "average_over_categories_zh" not in lb.average({"qasper": 1.0})["metrics"]
    with pytest.raises(UserError, match="unknown LongBench dataset"):
        lb.average({"qasper_e": 1.0})


# ------------------------------------------------------------------------------------------------ prediction dirs


def test_score_pred_dir_writes_official_result(tmp_path):
    folder = write_pred_files(tmp_path / "pred" / "m")
    result, path = lb.score_pred_dir(folder)
    assert path == folder / "result.json"
    assert path.read_text(encoding="utf-8") == expected_file_text(folder, OFFICIAL_RESULT)
    assert list(result) == [n[:-6] for n in os.listdir(folder) if n.endswith(".jsonl")]
    assert result == OFFICIAL_RESULT
    assert not list(folder.glob(".*"))  # no temporary file left


def test_score_pred_dir_e_writes_official_result(tmp_path):
    folder = write_pred_files(tmp_path / "pred_e" / "m")
    result, path = lb.score_pred_dir(folder, e=True)
    assert path.read_text(encoding="utf-8") == expected_file_text(folder, OFFICIAL_RESULT_E)
    assert math.isnan(result["vcsum"]["8k+"])


@pytest.mark.slow
@pytest.mark.parametrize("e", [False, True])
def test_cli_score_longbench(tmp_path, cli_env, lceval_cmd, e):
    folder = write_pred_files(tmp_path / "pred")
    (folder / "notes.txt").write_text("not a prediction file")
    proc = subprocess.run([*lceval_cmd, "score", "longbench", "--pred-dir", str(folder), *(["--e"] if e else [])],
                          env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = OFFICIAL_RESULT_E if e else OFFICIAL_RESULT
    assert (folder / "result.json").read_text(encoding="utf-8") == expected_file_text(folder, expected)
    assert json.dumps(json.loads(proc.stdout)) == json.dumps(json.loads(expected_file_text(folder, expected)))
    assert "result.json" in proc.stderr


# --------------------------------------------------------------------------------------------------- bad input


def _bad_folder(tmp_path: Path, content: str, name: str = "trec.jsonl") -> Path:
    folder = write_pred_files(tmp_path / "pred")
    (folder / name).write_text(content, encoding="utf-8")
    (folder / "result.json").write_text("previous result")
    return folder


@pytest.mark.parametrize(("content", "fragments"), [
    ('{"pred": "a", "answers": ["a"], "all_classes": null, "length": 1}\n{"pred": "a", "answ\n',
     ["trec.jsonl line 2", "not valid JSON"]),
    ('{"pred": "a", "answers": ["a"], "all_classes": null, "length": 1}\n\n{"pred": "b", "all_classes": null}\n',
     ["trec.jsonl line 3", "'answers'"]),
    ('{"pred": null, "answers": ["a"], "all_classes": null, "length": 1}\n', ["trec.jsonl line 1", "pred"]),
    ('{"pred": "a", "answers": "a", "all_classes": null, "length": 1}\n', ["trec.jsonl line 1", "answers"]),
    ('[1, 2]\n', ["trec.jsonl line 1", "not a JSON object"]),
    ('\n', ["trec.jsonl", "no predictions"]),
])
def test_malformed_file_names_file_and_line(tmp_path, content, fragments):
    folder = _bad_folder(tmp_path, content)
    with pytest.raises(UserError) as err:
        lb.score_pred_dir(folder)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert (folder / "result.json").read_text() == "previous result"


def test_e_needs_length(tmp_path):
    folder = tmp_path / "pred"
    folder.mkdir()
    (folder / "trec.jsonl").write_text('{"pred": "a", "answers": ["a"], "all_classes": null}\n')
    lb.score_pred_dir(folder)  # eval.py without --e does not read length
    with pytest.raises(UserError, match=r"trec\.jsonl line 1 lacks the field 'length'"):
        lb.score_pred_dir(folder, e=True)


def test_unknown_dataset_file_and_missing_or_empty_folder(tmp_path):
    folder = _bad_folder(tmp_path, "{}\n", name="trec_e.jsonl")
    with pytest.raises(UserError, match=r"trec_e\.jsonl is not named after a LongBench dataset.*narrativeqa, qasper"):
        lb.score_pred_dir(folder)
    assert (folder / "result.json").read_text() == "previous result"
    with pytest.raises(UserError, match="does not exist"):
        lb.score_pred_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "result.json").write_text("{}")
    with pytest.raises(UserError, match="holds no .jsonl prediction files"):
        lb.score_pred_dir(tmp_path / "empty")


@pytest.mark.slow
def test_cli_bad_line_is_one_error_line(tmp_path, cli_env, lceval_cmd):
    folder = _bad_folder(tmp_path, '{"pred": "a"\n')
    proc = subprocess.run([*lceval_cmd, "score", "longbench", "--pred-dir", str(folder)],
                          env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "trec.jsonl line 1" in last
    assert (folder / "result.json").read_text() == "previous result"
