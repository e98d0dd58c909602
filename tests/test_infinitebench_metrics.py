"""InfiniteBench scoring against values the official scorer produced.

Every expected value below was computed by running the official OpenBMB/InfiniteBench src/compute_scores.py (outside
this project) on the same inputs: v-a at commit 88b3daa6989da2fbe0077170d7a3c84c25d5ae58, v-b at commit
ae04ef161b0d2e99eb77c0e845630b44e655bc65 (compute_scores.py as at 51d9b37), with `evaluate` 0.4.1's rouge metric
script on rouge-score 0.1.2. Values are compared exactly, not approximately.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from lceval.api.errors import UserError
from lceval.metrics import infinitebench as ib

ARABIC_71 = "\u0667\u0661"  # Arabic-Indic digits: not ASCII, so first_int skips them
ARABIC_42 = "\u0664\u0662"  # ... but int() reads them

# (task, prediction, ground truth, official v-a score, official v-b score)
EDGE_CASES = [
    ("passkey", "The pass key is 71432.", "71432", 1.0, 1.0),
    ("passkey", "99999 then 71432", ["71432"], 0.0, 0.0),
    ("passkey", "pass key: 071432", "71432", 0.0, 0.0),
    ("passkey", "no digits here", ["71432"], 0.0, 0.0),
    ("passkey", "71432", [71432], 0.0, 0.0),
    ("passkey", f"{ARABIC_71} then 71432", ["71432"], 1.0, 1.0),
    ("number_string", "The sequence is 1234567890.", ["1234567890"], 1.0, 1.0),
    ("number_string", "12345-67890", ["1234567890"], 0.0, 0.0),
    ("kv_retrieval", 'The value is "a1b2-c3d4".', "a1b2-c3d4", 1.0, 1.0),
    ("kv_retrieval", '"a1b2-c3d4"', ["a1b2-c3d4"], 0.0, 1.0),  # v-a compares the list itself
    ("kv_retrieval", "a1b2-c3d4-extra", ["a1b2-c3d4"], 0.0, 0.0),
    ("kv_retrieval", "{key: a1b2}", "a1b2", 1.0, 1.0),
    ("longdialogue_qa_eng", "JOHN", ["JOHN"], 1.0, 1.0),
    ("longdialogue_qa_eng", "John, probably.", ["JOHN"], 1.0, 1.0),
    ("longdialogue_qa_eng", "Mary Jane", ["MARY JANE"], 0.0, 1.0),
    ("longdialogue_qa_eng", "It is BOB", ["ALICE", "BOB"], 0.0, 1.0),
    ("longdialogue_qa_eng", "Johnson", ["JOHN"], 0.0, 1.0),
    ("longdialogue_qa_eng", "john", ["john"], 0.0, 1.0),
    ("longbook_sum_eng", "The cat sat.\nThe dog ran.", ["The cat sat.\nThe dog ran."], 1.0, 1.0),
    ("longbook_sum_eng", "", ["A summary of the book."], 0.0, 0.0),
    ("longbook_sum_eng", "The dog sat on the mat.\n\nA cat ran away quickly.",
     ["The cat sat on the mat.\nThe dog ran away."], 0.8571428571428572, 0.8571428571428572),
    ("longbook_sum_eng", "Caf\u00e9 r\u00e9sum\u00e9 of the novel, 1984 edition", "The cafe resume of the 1984 novel",
     0.39999999999999997, 0.39999999999999997),
    ("longbook_sum_eng", "one two three four", ["one two", "three four five six seven"],
     0.6666666666666666, 0.6666666666666666),
    ("longbook_sum_eng", "one two three four five six seven eight nine ten",
     ["ten nine eight seven six five four three two one"], 0.10000000000000002, 0.10000000000000002),
    ("longbook_qa_eng", "The answer is Paris.", ["Paris"], 0.5, 0.5),
    ("longbook_qa_eng", "an apple", ["the apple", "pear"], 1.0, 1.0),
    ("longbook_qa_eng", "", ["x"], 0.0, 0.0),
    ("longbook_qa_eng", "a b", "ab", 1.0, 1.0),  # a string label is iterated character by character
    ("longbook_qa_eng", "Paris, the capital of France", ["Paris France", "Lyon"], 0.6666666666666666,
     0.6666666666666666),
    ("longbook_qa_chn", "程远贺。", ["叶婕姗"], 0.0, 0.0),
    ("longbook_qa_chn", "李浓樟最后被冻死", ["李浓樟"], 0.5454545454545454, 0.5454545454545454),
    ("longbook_qa_chn", "Hello，世界", ["hello世界！"], 1.0, 1.0),
    ("longbook_choice_eng", "A", ["Paris", "A"], 1.0, 1.0),
    ("longbook_choice_eng", "Based on the text, the answer is C", ["Rome", "C"], 0.0, 1.0),
    ("longbook_choice_eng", "Paris", ["Paris", "A"], 1.0, 1.0),
    ("longbook_choice_eng", "The answer is: Paris is right", ["Paris", "A"], 1.0, 1.0),
    ("longbook_choice_eng", "The correct option is D.", ["Oslo", "D"], 1.0, 1.0),
    ("longbook_choice_eng", "I think AB", ["Oslo", "A"], 0.0, 0.0),
    ("longbook_choice_eng", "  \n ", ["Oslo", "A"], 0.0, 0.0),
    ("longbook_choice_eng", "(B)\nmaybe A", ["Bern", "B"], 0.0, 1.0),
    ("longbook_choice_eng", "The answer is", ["Bern", "B"], 0.0, 0.0),
    ("longbook_choice_eng", "the answer is C, not D", ["Bern", "C"], 1.0, 1.0),
    ("code_debug", "B. func_b", ["func_b", "B"], 1.0, 1.0),
    ("code_debug", "The answer is: func_c", ["func_c", "C"], 1.0, 1.0),
    ("code_debug", "Option C", ["func_c", "C"], 0.0, 1.0),
    ("code_debug", "I think it is C", ["func_c", "C"], 0.0, 1.0),
    ("code_debug", "C is wrong, I'd say A", ["func_c", "C"], 0.0, 1.0),
    ("code_debug", "func_d has the bug", ["func_d", "D"], 0.0, 1.0),
    ("code_debug", "A", ["func_a", "A"], 0.0, 1.0),
    ("code_debug", "It is: D", ["func_d", "D"], 1.0, 1.0),
    ("code_debug", "correct option is: B", ["func_b", "B"], 1.0, 1.0),
    ("code_debug", "`B`", ["func_b", "B"], 0.0, 1.0),
    ("code_debug", "", ["func_a", "A"], 0.0, 0.0),
    ("code_debug", "xyz", ["", "A"], 0.0, 1.0),  # v-b: every text starts with an empty function name
    ("code_run", "The value is 42.", [42], 1.0, 1.0),
    ("code_run", "-5", [-5], 1.0, 1.0),
    ("code_run", "5,", [5], 0.0, 0.0),
    ("code_run", "", [3], 0.0, 0.0),
    ("code_run", "result: `17`", [17], 1.0, 1.0),
    ("code_run", "1_000", [1000], 1.0, 1.0),
    ("code_run", "42", ["42"], 0.0, 0.0),
    ("code_run", ARABIC_42, [42], 1.0, 1.0),
    ("math_find", "The largest number is 97.", [97], 1.0, 1.0),
    ("math_find", "-5", [5], 1.0, 1.0),
    ("math_find", "3.5", [3.5], 1.0, 1.0),
    ("math_find", "4", [4.0], 1.0, 1.0),
    ("math_find", "no number", [4], 0.0, 0.0),
]

# (prediction, ground truth, model_name, official score; the same in v-a and v-b)
MATH_CALC_CASES = [
    ("1, 3, 5, 2", [3, 5, 2], "gpt4", 1.0),  # gpt4 drops the echoed first operand
    ("1, 3, 5, 2", [3, 5, 2], "yarn-mistral", 0.0),
    ("3, 5, 7", [[3, 5, 2]], "yarn-mistral", 0.6666666666666666),
    ("3 -5 2", [3, -5, 2], "yarn-mistral", 0.3333333333333333),
    ("", [1], "yarn-mistral", 0.0),
    ("[1, 3, -1, -11]", [1, 3, 1, 11], "gpt4", 0.0),
]


@pytest.mark.parametrize(("task", "prediction", "ground_truth", "v_a", "v_b"), EDGE_CASES)
def test_sample_scores_match_the_official_scorer(task, prediction, ground_truth, v_a, v_b):
    assert ib.score_sample(task, prediction, ground_truth, scorer="v-a") == v_a
    assert ib.score_sample(task, prediction, ground_truth, scorer="v-b") == v_b


@pytest.mark.parametrize(("prediction", "ground_truth", "model_name", "expected"), MATH_CALC_CASES)
def test_math_calc_matches_the_official_scorer(prediction, ground_truth, model_name, expected):
    for scorer in ib.SCORERS:
        assert ib.score_sample("math_calc", prediction, ground_truth, scorer, model_name=model_name) == expected


def test_math_calc_defaults_to_the_official_model_name():
    assert ib.DEFAULT_MODEL_NAME == "gpt4"
    assert ib.score_sample("math_calc", "1, 3, 5, 2", [3, 5, 2]) == 1.0


def test_math_find_decimal_against_an_int_label_scores_zero():
    # Deliberate difference: the official scorer raises ValueError (int("12.5")) and stops the whole run.
    assert ib.score_sample("math_find", "12.5", [12]) == 0.0
    assert ib.score_sample("math_find", "12.5", [12], scorer="v-b") == 0.0


def test_numbers_past_the_int_digit_limit_compare_like_the_official_python():
    zeros = "0" * 5000
    assert ib.score_sample("code_run", f"{zeros}42", [42]) == 1.0
    assert ib.score_sample("math_find", f"{zeros}7", [7]) == 1.0
    assert ib.score_sample("math_calc", f"{zeros}3, 5", [3, 5], model_name="yarn-mistral") == 1.0


def test_kv_retrieval_aliases_score_like_kv_retrieval():
    assert ib.score_sample("kv_retrieval_prefix", "x a1b2 y", "a1b2") == 1.0
    assert ib.score_sample("kv_retrieval_both", "x a1b2 y", ["a1b2"], scorer="v-b") == 1.0


def test_task_score_is_the_plain_mean():
    predictions = ["A", "Based on it, C", "Paris"]
    labels = [["Paris", "A"], ["Rome", "C"], ["Paris", "A"]]
    assert ib.score_task("longbook_choice_eng", predictions, labels, "v-a") == 2 / 3
    assert ib.score_task("longbook_choice_eng", predictions, labels, "v-b") == 1.0
    assert ib.percent(2 / 3) == 66.67


def test_unknown_scorer_and_task_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="v-a.*v-b"):
        ib.score_sample("passkey", "1", "1", scorer="v-c")
    with pytest.raises(UserError, match="v-a.*v-b"):
        ib.score_pred_dir(tmp_path, scorer="latest")
    with pytest.raises(UserError, match="passkey"):
        ib.score_sample("longbook_sum", "x", ["x"])


def test_ground_truths_the_official_scorer_cannot_read_raise():
    with pytest.raises(ib.GroundTruthError):
        ib.score_sample("math_find", "4", ["4"])  # the official raises TypeError on a str label
    with pytest.raises(ib.GroundTruthError):
        ib.score_sample("math_calc", "1, 2", 12)
    with pytest.raises(ib.GroundTruthError):
        ib.score_sample("code_debug", "A", ["func_a"])
    with pytest.raises(ib.GroundTruthError):
        ib.score_sample("longbook_sum_eng", "text", [])


# ---------------------------------------------------------------------------------------------------- round trip

# Official-format prediction files; the official scorer read these exact files (written as in write_pred_dir).
PRED_FILES = {
    "passkey": [
        ("The pass key is 71432.", ["71432"]),
        ("99999 then 71432", ["71432"]),
        ("I cannot find it.", ["20111"]),
    ],
    "number_string": [
        ("The sequence of digits is 1234567890.", ["1234567890"]),
        ("12345-67890", ["1234567890"]),
    ],
    "kv_retrieval": [
        ('The value is "9f1c2e5a-77b0-4d2e-9c1e-0b5d3a8f6e21".', ["9f1c2e5a-77b0-4d2e-9c1e-0b5d3a8f6e21"]),
        ("9f1c2e5a-77b0", ["9f1c2e5a-77b0-4d2e-9c1e-0b5d3a8f6e21"]),
    ],
    "longdialogue_qa_eng": [
        ("JAKE", ["JAKE"]),
        ("Mary Jane", ["MARY JANE"]),
        ("I believe it is Sam.", ["SAM", "SAMANTHA"]),
        ("Nobody", ["ROSE"]),
    ],
    "longbook_sum_eng": [
        ("The novel follows a young girl.\nShe travels to the city and finds her lost brother.",
         ["A young girl travels to the city.\nThere she finds her brother, who was lost years ago."]),
        ("", ["The book is about a war."]),
    ],
    "longbook_choice_eng": [
        ("A", ["The lighthouse", "A"]),
        ("Based on the passage, the answer is C", ["The orchard", "C"]),
        ("The answer is: The orchard", ["The orchard", "C"]),
        ("(D)\nor maybe B", ["The mill", "D"]),
    ],
    "longbook_qa_eng": [
        ("The answer is Paris.", ["Paris"]),
        ("an old wooden boat", ["the wooden boat", "a raft"]),
    ],
    "longbook_qa_chn": [
        ("李浓樟最后被冻死", ["李浓樟"]),
        ("程远贺。", ["叶婕姗"]),
    ],
    "code_debug": [
        ("B. func_b", ["func_b", "B"]),
        ("A", ["func_a", "A"]),
        ("The answer is: func_c", ["func_c", "C"]),
        ("I think it is D", ["func_d", "D"]),
        ("func_d has the bug", ["func_a", "A"]),
    ],
    "code_run": [
        ("The value is 42.", [42]),
        ("5,", [5]),
        ("-17", [-17]),
    ],
    "math_find": [
        ("The largest number is 97.", [97]),
        ("-5", [5]),
        ("3.5", [3.5]),
    ],
    "math_calc": [
        ("[4, 7, 5, 9]", [[7, 5, 9]]),
        ("4, 7, 5, 2", [7, 5, 9]),
    ],
}

# What the official compute_scores printed for those files (folder results/gpt4, --model_name gpt4).
OFFICIAL_V_A = {
    "passkey": 0.3333333333333333, "number_string": 0.5, "kv_retrieval": 0.0, "longdialogue_qa_eng": 0.5,
    "longbook_sum_eng": 0.33333333333333337, "longbook_choice_eng": 0.5, "longbook_qa_eng": 0.65,
    "longbook_qa_chn": 0.2727272727272727, "math_find": 1.0, "math_calc": 0.8333333333333333,
    "code_run": 0.6666666666666666, "code_debug": 0.4,
}
OFFICIAL_V_B = {
    **OFFICIAL_V_A, "kv_retrieval": 0.5, "longdialogue_qa_eng": 0.75, "longbook_choice_eng": 1.0, "code_debug": 0.8,
}
OFFICIAL_MATH_CALC_YARN_MISTRAL = 0.0  # the same files in results/yarn-mistral, --model_name yarn-mistral


def write_pred_dir(folder):
    """The files as the official pred scripts write them; passkey uses the older pred/label keys and every line
    is followed by a blank one; a step-by-step file of no official task sits beside them."""
    folder.mkdir(parents=True)
    for task, rows in PRED_FILES.items():
        with (folder / f"preds_{task}.jsonl").open("w", encoding="utf-8") as handle:
            for index, (prediction, ground_truth) in enumerate(rows):
                if task == "passkey":
                    row = {"id": index, "pred": prediction, "label": ground_truth}
                else:
                    row = {"id": index, "prediction": prediction, "ground_truth": ground_truth}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n\n")
    (folder / "preds_code_debug_step_by_step.jsonl").write_text("not json\n")
    return folder


@pytest.mark.parametrize(("scorer", "expected"), [("v-a", OFFICIAL_V_A), ("v-b", OFFICIAL_V_B)])
def test_pred_dir_scores_match_the_official_scorer(tmp_path, scorer, expected):
    pred_dir = write_pred_dir(tmp_path / "run")
    result, path = ib.score_pred_dir(pred_dir, scorer=scorer)
    assert path == pred_dir / "result.json"
    assert json.loads(path.read_text()) == result
    assert result["scores"] == expected
    assert list(result["scores"]) == list(expected)  # compute_scores' task order
    assert result["scores_x100"] == {task: round(100 * value, 2) for task, value in expected.items()}
    assert result["scorer"] == scorer and result["scorer_commit"] == ib.SCORER_COMMITS[scorer]
    assert result["model_name"] == "gpt4"
    assert result["n"]["passkey"] == 3 and result["n"]["code_debug"] == 5
    assert result["ignored_files"] == ["preds_code_debug_step_by_step.jsonl"]


def test_pred_dir_named_after_an_official_model_uses_that_model_name(tmp_path):
    result, _ = ib.score_pred_dir(write_pred_dir(tmp_path / "yarn-mistral"), scorer="v-a")
    assert result["model_name"] == "yarn-mistral"
    assert result["scores"]["math_calc"] == OFFICIAL_MATH_CALC_YARN_MISTRAL
    forced, _ = ib.score_pred_dir(tmp_path / "yarn-mistral", model_name="gpt4")
    assert forced["scores"]["math_calc"] == OFFICIAL_V_A["math_calc"]


def test_cli_score_writes_the_official_values(tmp_path, cli_env, lceval_cmd):
    pred_dir = write_pred_dir(tmp_path / "run")
    proc = subprocess.run([*lceval_cmd, "score", "infinitebench", "--pred-dir", str(pred_dir), "--scorer", "v-b"],
                          env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((pred_dir / "result.json").read_text())
    assert result["scores"] == OFFICIAL_V_B and result["scorer"] == "v-b"


def test_math_find_lines_the_official_scorer_stops_on_are_listed(tmp_path):
    pred_dir = tmp_path / "run"
    pred_dir.mkdir()
    lines = [{"prediction": "7", "ground_truth": [7]}, {"prediction": "12.5", "ground_truth": [12]}]
    (pred_dir / "preds_math_find.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result, _ = ib.score_pred_dir(pred_dir)
    assert result["scores"] == {"math_find": 0.5}
    assert result["official_scorer_would_stop"] == {"math_find": [2]}


# ------------------------------------------------------------------------------------------------------ bad input


def test_missing_folder_and_folder_without_preds_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ib.score_pred_dir(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no preds_<task>.jsonl"):
        ib.score_pred_dir(tmp_path)


@pytest.mark.parametrize(("line", "expected"), [
    ('{"prediction": "1", "ground_truth": ["1"]', "not valid JSON"),
    ('{"prediction": "1"}', "lacks the field 'ground_truth'"),
    ('{"ground_truth": ["1"]}', "lacks the field 'prediction'"),
    ('{"prediction": 1, "ground_truth": ["1"]}', "not a string"),
    ('["1", "1"]', "not a JSON object"),
])
def test_malformed_line_names_the_file_and_line(tmp_path, line, expected):
    good = json.dumps({"prediction": "71432", "ground_truth": ["71432"]})
    (tmp_path / "preds_passkey.jsonl").write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(UserError) as info:
        ib.score_pred_dir(tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'preds_passkey.jsonl'} line 3" in message and expected in message
    assert not (tmp_path / "result.json").exists()


def test_unscorable_ground_truth_names_the_file_and_line(tmp_path):
    lines = ['{"prediction": "4", "ground_truth": [4]}', '{"prediction": "4", "ground_truth": ["4"]}']
    (tmp_path / "preds_math_find.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"preds_math_find\.jsonl line 2: .*Math\.Find label must be a number"):
        ib.score_pred_dir(tmp_path)


def test_cli_reports_a_malformed_line_in_one_sentence(tmp_path, cli_env, lceval_cmd):
    (tmp_path / "preds_passkey.jsonl").write_text('{"prediction": "1"}\n')
    proc = subprocess.run([*lceval_cmd, "score", "infinitebench", "--pred-dir", str(tmp_path)],
                          env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "preds_passkey.jsonl line 1" in " ".join(proc.stdout.split() + proc.stderr.split())
    assert "Traceback" not in proc.stderr
