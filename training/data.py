"""Training data: a data-mix file of sources, each tokenised with the loss only where the model should learn.

A data-mix file (YAML) lists sources; `path[N]` takes a seeded random subset of N records:

    sources:
      - redpajama/train.jsonl[5000]     # {"text": ...}: language modelling, loss on every token
      - longalpaca/train.json           # {"instruction", "input"?, "output"}: loss on the answer only
      - gpt/one_detail_book.jsonl       # {"conversations": [{"role", "content"}, ...]}: loss on assistant turns
      - keys.jsonl                      # {"prompt", "completion"}: no chat template, loss on the completion
      - {generate: retrieval, samples: 20000, max_chars: 900, seed: 1}   # lceval data retrieval's records

A source's kind comes from its records' fields, or from `kind:` when a source is written as a mapping
(`{path: ..., kind: text|instruction|conversation|completion}`), and a generated source
(`{generate: retrieval, ...}` with the settings of `lceval data retrieval`) is made in memory, the same records
that command writes. Files are JSON lists or JSON lines, relative to the
data-mix file (or to its `root:`). Instruction and conversation records go through the base model's chat
template; the tokens of each assistant turn (its end-of-turn token included) carry labels, all else is -100.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from lceval.api import files
from lceval.api.errors import UserError
from lceval.api.settings import Count, NonEmptyText, parse, settings_class
from lceval.running.config import load_yaml

IGNORE = -100
Kind = Literal["text", "instruction", "conversation", "completion"]
KINDS = get_args(Kind)
_COUNT = re.compile(r"^(?P<path>.*?)\[(?P<n>\d+)\]$")


@dataclass(frozen=True)
class Source:
    path: Path
    count: int | None  # a seeded random subset of this many records; None: all
    kind: str | None  # None: from the records' fields
    generate: Any = None  # a generated source: its lceval.training.retrieval.RetrievalSpec (path is its label)

    @property
    def name(self) -> str:
        return self.path.name


@settings_class
class SourceEntry:
    """A `sources:` entry of a data-mix file, as a mapping (each field's type is its range; lceval.api.settings)."""

    path: NonEmptyText
    count: Count | None = None  # a seeded random subset of this many records
    kind: Kind | None = None


def parse_source(entry: Any, root: Path, where: str) -> Source:
    """One `sources:` entry: `path[N]` or a mapping {path, count?, kind?}."""
    if isinstance(entry, str):
        entry = {"path": entry}
    if isinstance(entry, dict) and "generate" in entry:
        return generated_source(entry, where)
    if not isinstance(entry, dict) or "path" not in entry:
        raise UserError(f"data-mix {where} has a source that is neither a path nor a mapping with a path: {entry!r}.")
    data = dict(entry, path=str(entry["path"]).strip())
    match = _COUNT.match(data["path"])
    if match:
        data.update(path=match["path"], count=int(match["n"]))
    source = parse(SourceEntry, data, label=lambda key: f"data-mix {where} source {data['path']!r} {key}",
                   unknown=lambda key, known: f"data-mix {where} source {data['path']!r} has unknown key {key!r}; "
                                              f"use {', '.join(known)}.")
    path = Path(source.path).expanduser()
    return Source(path if path.is_absolute() else root / path, source.count, source.kind)


def generated_source(entry: dict[str, Any], where: str) -> Source:
    """`{generate: retrieval, samples: N, ...}`: lceval data retrieval's records, made when the mix is read."""
    from lceval.training.retrieval import RetrievalSpec

    settings = {k: v for k, v in entry.items() if k != "generate"}
    if entry["generate"] != "retrieval":
        raise UserError(f"data-mix {where} asks to generate {entry['generate']!r}; the generator is `retrieval`.")
    spec = parse(RetrievalSpec, settings, label=lambda key: f"data-mix {where} generate retrieval {key}",
                 unknown=lambda key, known: f"data-mix {where} generated source has unknown key {key!r}; use "
                                            f"{', '.join(known)}.")
    return Source(Path(f"generated-retrieval-seed{spec.seed}"), None, None, spec)


def load_mix(path: Path) -> list[Source]:
    data = load_yaml(path, "data-mix")
    unknown = sorted(set(data) - {"sources", "root"}, key=str)
    if unknown:
        raise UserError(f"data-mix {path} has unknown key {unknown[0]!r}; use sources (and root).")
    entries = data.get("sources")
    if not entries or not isinstance(entries, list):
        raise UserError(f"data-mix {path} lists no sources; add a `sources:` list of data files.")
    root = Path(data.get("root") or ".").expanduser()
    root = root if root.is_absolute() else path.parent / root
    return [parse_source(entry, root, str(path)) for entry in entries]


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list or JSON lines file of records."""
    if not path.exists():
        raise UserError(f"data file {path} does not exist; fix its path in the data-mix file.")
    text = files.read_text(path, "data file")
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise UserError(f"data file {path} is not JSON or JSON lines (line {err.lineno}); fix it.") from err
    if not all(isinstance(r, dict) for r in records):
        raise UserError(f"data file {path} must hold JSON objects, one per record.")
    return records


def source_records(source: Source, seed: int) -> list[dict[str, Any]]:
    """The records a source gives: its file's (or its generator's), subset where it asks for one."""
    if source.generate is not None:
        from lceval.training.retrieval import generate

        return list(generate(source.generate))
    return subset(read_records(source.path), source.count, seed, source.path)


def mix_digest(sources: list[Source], seed: int) -> str:
    """sha256 of what a mix's records are made from: each file's bytes, subset and kind, each generator's settings
    and identity (version and word lists), and the seed; the same digest means the same records, without reading
    or generating them."""
    digest = hashlib.sha256(str(seed).encode())
    for source in sources:
        if source.generate is not None:
            from lceval.training.retrieval import generator_identity

            digest.update(generator_identity().encode())
            digest.update(json.dumps(asdict(source.generate), sort_keys=True).encode())
        else:
            digest.update(json.dumps([source.path.name, source.count, source.kind]).encode())
            digest.update(hashlib.sha256(files.read_bytes(source.path, "data file")).digest())
    return digest.hexdigest()


def mix_texts(sources: list[Source], seed: int) -> list[str]:
    """Every text of a mix's records (each turn of a conversation, prompt and completion): a tokenizer's corpus."""
    texts = []
    for source in sources:
        for record in source_records(source, seed):
            kind = source.kind or record_kind(record, source.path)
            if kind == "text":
                texts.append(str(record["text"]))
            elif kind == "completion":
                texts += [str(record["prompt"]), str(record["completion"])]
            else:
                texts += [m["content"] for m in to_messages(record, kind, source.path)]
    return texts


def record_kind(record: dict[str, Any], path: Path) -> str:
    if "conversations" in record:
        return "conversation"
    if "instruction" in record and "output" in record:
        return "instruction"
    if "prompt" in record and "completion" in record:
        return "completion"
    if "text" in record:
        return "text"
    raise UserError(f"data file {path} has a record with fields {sorted(record)[:5]}; a record needs text, "
                    "instruction and output, conversations, or prompt and completion.")


def subset(records: list[dict[str, Any]], count: int | None, seed: int, path: Path) -> list[dict[str, Any]]:
    """A seeded random subset, the same on every machine and independent of the other sources."""
    if count is None or count >= len(records):
        return list(records)
    rng = random.Random(f"{seed}:{path.name}")
    chosen = sorted(rng.sample(range(len(records)), count))
    return [records[i] for i in chosen]


def to_messages(record: dict[str, Any], kind: str, path: Path) -> list[dict[str, str]]:
    if kind == "instruction":
        prompt = record["instruction"]
        if record.get("input"):
            prompt = f"{prompt}\n\n{record['input']}"
        return [{"role": "user", "content": str(prompt)}, {"role": "assistant", "content": str(record["output"])}]
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise UserError(f"data file {path} has a conversation with no turns; give a list of {{role, content}}.")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise UserError(f"data file {path} has a conversation turn without role and content: {str(turn)[:80]}.")
        messages.append({"role": str(turn["role"]), "content": str(turn["content"])})
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"data file {path} has a conversation with no assistant turn, so nothing to learn from.")
    return messages


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn (answer and end-of-turn)."""
    def render(msgs: list[dict[str, str]], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    text = render(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if not (text.startswith(upto) and upto.startswith(before)):
            raise UserError("the model's chat template does not render a conversation as a prefix of a longer one, "
                            "so assistant turns cannot be located; use a template without lookahead.")
        spans.append((len(before), len(upto)))
    return text, spans


def encode_chat(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation, tokenised as a model meets it when it answers: the text up to each
    assistant turn (ending in the generation prompt) on its own, then that turn (answer and end-of-turn) on its
    own; labels on the assistant turns only. Tokenised whole, a byte-level BPE splits the generation prompt's
    trailing blank line differently when an answer follows it (two newline tokens instead of one blank-line
    token), and a model trained on that meets a prompt at inference that it never saw before an answer."""
    text, spans = assistant_spans(tokenizer, messages)
    ids: list[int] = []
    labels: list[int] = []
    pieces = []
    at = 0
    for start, end in spans:
        pieces += [(text[at:start], False), (text[start:end], True)]
        at = end
    pieces.append((text[at:], False))
    for piece, learned in pieces:
        if piece:
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            ids += piece_ids
            labels += piece_ids if learned else [IGNORE] * len(piece_ids)
    return ids, labels


def encode_plain_instruction(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Without a chat template: BOS + prompt + blank line, then the answer and EOS, loss on the answer."""
    if len(messages) != 2:
        raise UserError("conversation data needs the model's chat template; set data.chat_template true.")
    return encode_completion(tokenizer, messages[0]["content"] + "\n\n", messages[1]["content"])


def encode_completion(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Completion style (no chat template, as the passkey task prompts): BOS + prompt, then the completion and EOS,
    each tokenised on its own as a prompt and a generated continuation are; loss on the completion."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids + answer, [IGNORE] * len(ids) + answer


def encode_text(tokenizer, text: str, max_length: int) -> tuple[list[int], list[int]]:
    """Language modelling: BOS + text (+ EOS when it fits), loss on every token."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
    if len(ids) < max_length and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids, list(ids)


@dataclass
class DataReport:
    per_source: dict[str, int]
    dropped_overlong: int
    truncated: int
    dropped_no_labels: int


def build_examples(tokenizer, sources: list[Source], *, max_length: int, overlong: str, chat_template: bool,
                   seed: int, progress=None, by_source: bool = False,
                   train_on_input: bool = False) -> tuple[list[dict[str, Any]], DataReport]:
    """Every record of the mix as {input_ids, labels, length}, in a seeded shuffled order; with `by_source`, each
    source's examples shuffled on their own and the sources one after another in the listed order; with
    `train_on_input`, every token of a sample is a label, not only its answer."""
    if chat_template and tokenizer.chat_template is None:
        needs = any(s.kind in ("instruction", "conversation") for s in sources)
        if needs:
            raise UserError("the base model's tokenizer has no chat template; set data.chat_template false "
                            "(instruction data only) or use a chat model.")
    examples: list[dict[str, Any]] = []
    report = DataReport({}, 0, 0, 0)
    for index, source in enumerate(sources):
        first = len(examples)
        records = source_records(source, seed)
        task = progress.add_task(f"tokenising {source.name}", total=len(records)) if progress else None
        kept = 0
        for record in records:
            kind = source.kind or record_kind(record, source.path)
            if kind == "text":
                ids, labels = encode_text(tokenizer, str(record["text"]), max_length)
            else:
                if kind == "completion":
                    ids, labels = encode_completion(tokenizer, str(record["prompt"]), str(record["completion"]))
                elif chat_template and tokenizer.chat_template is not None:
                    ids, labels = encode_chat(tokenizer, to_messages(record, kind, source.path))
                else:
                    ids, labels = encode_plain_instruction(tokenizer, to_messages(record, kind, source.path))
                if len(ids) > max_length:
                    if overlong == "drop":
                        report.dropped_overlong += 1
                        if progress:
                            progress.advance(task)
                        continue
                    ids, labels = ids[:max_length], labels[:max_length]
                    report.truncated += 1
            if train_on_input:
                labels = list(ids)
            if all(label == IGNORE for label in labels[1:]):
                report.dropped_no_labels += 1
            else:
                examples.append({"input_ids": ids, "labels": labels, "length": len(ids)})
                kept += 1
            if progress:
                progress.advance(task)
        report.per_source[str(source.path)] = kept
        if by_source:
            part = examples[first:]
            random.Random(f"{seed}:{index}").shuffle(part)
            examples[first:] = part
    if not by_source:
        random.Random(seed).shuffle(examples)
    if not examples:
        raise UserError("the data mix gave no training samples (all dropped or without labels); check data.max_length "
                        "and the data files.")
    return examples, report


GROUP_BATCHES = 64  # in-order grouping: batches of like length are made within runs of this many batches


def group_in_order(examples: list[dict[str, Any]], batch_size: int, seed: int,
                   group_batches: int = GROUP_BATCHES) -> list[dict[str, Any]]:
    """Batches of like length that keep the order's course (a curriculum stays one): each run of `group_batches`
    batches' worth of consecutive examples is sorted by length, cut into batches, and those batches shuffled
    (seeded); a run never takes examples from the next one, so a source's examples stay among its neighbours."""
    rng = random.Random(f"{seed}:group")
    out: list[dict[str, Any]] = []
    run = batch_size * group_batches
    for start in range(0, len(examples), run):
        part = sorted(examples[start:start + run], key=lambda e: e["length"])
        batches = [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        whole = [b for b in batches if len(b) == batch_size]  # a short batch (the very last run's) stays last
        rng.shuffle(whole)
        out += [example for batch in whole + batches[len(whole):] for example in batch]
    return out


def pack(examples: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Greedy packing in order into rows of at most max_length tokens; positions restart at each sample.

    transformers builds a block-diagonal causal mask from restarting position_ids (when no attention mask is
    given), so packed samples never attend to each other; the first label of each sample is not predicted from
    the previous sample's last token.
    """
    rows: list[dict[str, Any]] = []
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for example in examples:
        n = len(example["input_ids"])
        if row["input_ids"] and len(row["input_ids"]) + n > max_length:
            rows.append({**row, "length": len(row["input_ids"])})
            row = {"input_ids": [], "labels": [], "position_ids": []}
        row["input_ids"] += example["input_ids"]
        row["labels"] += [IGNORE, *example["labels"][1:]]
        row["position_ids"] += list(range(n))
    if row["input_ids"]:
        rows.append({**row, "length": len(row["input_ids"])})
    return rows


class Collator:
    """Right padding to the longest row of the batch: pad id, labels -100, attention mask 0.

    Packed rows carry position_ids and no attention mask (so that transformers detects the packing); their
    padding forms one more "sample" of its own, with labels -100.
    """

    def __init__(self, pad_id: int, multiple_of: int = 1):
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(item["input_ids"]) for item in batch)
        width = -(-width // self.multiple_of) * self.multiple_of
        packed = "position_ids" in batch[0]
        out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        out["position_ids" if packed else "attention_mask"] = []
        for item in batch:
            n = len(item["input_ids"])
            pad = width - n
            out["input_ids"].append(item["input_ids"] + [self.pad_id] * pad)
            out["labels"].append(item["labels"] + [IGNORE] * pad)
            if packed:
                out["position_ids"].append(item["position_ids"] + list(range(pad)))
            else:
                out["attention_mask"].append([1] * n + [0] * pad)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in out.items()}
