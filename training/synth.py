"""`lceval data synth`: the seed paper's synthetic long-context data, from long documents and a teacher model.

A teacher behind an OpenAI-compatible chat endpoint writes, with the prompts of training/data/synth.yaml:
- single_detail: questions on each ~4K-token chunk of a document,
- multi_detail: questions over the whole document,
- bio: biography summaries of the document's main characters.
Each finished request is appended to OUT/requests.jsonl as it finishes, so a killed run resumes where it stopped
(requests whose answer parsed are not sent again). The answers are then assembled into OUT/<task>.jsonl, one
multi-turn conversation per document and task, in the `conversations` format of the data-mix files (the first
user turn holds the whole document). HTTP, retries and bounded concurrency are lceval's HTTP client
(lceval.http.client): one implementation of retries.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

from lceval.api.errors import UserError

DOCUMENT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Unit:
    """One request: a task's prompt on a document or on one chunk of it."""

    id: str
    task: str
    document: str
    index: int  # chunk number (0 for whole-document tasks)
    context: str


def load_spec(path: Path | None = None) -> dict[str, Any]:
    """The prompts and request settings: a YAML file, or the bundled paper prompts."""
    if path is None:
        text = resources.files("lceval.training").joinpath("data/synth.yaml").read_text(encoding="utf-8")
        where = "the bundled synth.yaml"
        spec = yaml.safe_load(text) or {}
    else:
        from lceval.api import files

        where = str(path)
        spec = files.read_yaml(Path(path), "prompts file") or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks") or {}, dict):
        raise UserError(f"prompts file {where} must be a mapping with `tasks`, a mapping of task name to prompt.")
    for name, task in (spec.get("tasks") or {}).items():
        if (not isinstance(task, dict) or task.get("unit") not in ("chunk", "document")
                or "${context}" not in str(task.get("prompt", ""))):
            raise UserError(f"task {name} in {where} needs unit (chunk or document) and a prompt with ${{context}}.")
    if not spec.get("tasks"):
        raise UserError(f"prompts file {where} defines no tasks.")
    return spec


def read_documents(folder: Path) -> list[tuple[str, str]]:
    """(name, text) of every .txt/.md file in the folder, in name order (the same on every machine)."""
    if not Path(folder).is_dir():
        raise UserError(f"documents folder {folder} does not exist; pass a folder of .txt files.")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in DOCUMENT_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"documents folder {folder} has no .txt or .md files.")
    return [(p.stem, p.read_text(encoding="utf-8", errors="replace")) for p in files]


def chunk(text: str, size: int) -> list[str]:
    """Paragraph-aligned chunks of at most `size` characters (a longer paragraph is cut)."""
    chunks, current = [], ""
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        while len(paragraph) > size:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(paragraph[:size])
            paragraph = paragraph[size:]
        if current and len(current) + 2 + len(paragraph) > size:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks


def plan_units(documents: list[tuple[str, str]], spec: dict[str, Any], tasks: list[str]) -> list[Unit]:
    unknown = [t for t in tasks if t not in spec["tasks"]]
    if unknown:
        raise UserError(f"unknown synth task {unknown[0]!r}; known: {', '.join(spec['tasks'])}.")
    units = []
    for task in tasks:
        for name, text in documents:
            if spec["tasks"][task]["unit"] == "chunk":
                for i, part in enumerate(chunk(text, int(spec.get("chunk_chars", 16000)))):
                    units.append(Unit(f"{task}/{name}/{i}", task, name, i, part))
            else:
                units.append(Unit(f"{task}/{name}/0", task, name, 0, text.strip()))
    return units


def json_schema(fields: list[str]) -> dict[str, Any]:
    """The answer's shape, sent as response_format so that a server with structured output returns valid JSON."""
    item = {"type": "object", "properties": {f: {"type": "string"} for f in fields}, "required": fields,
            "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "items", "schema": {"type": "array", "items": item}}}


def parse_items(text: str, fields: list[str]) -> list[dict[str, str]] | None:
    """The list of {field: text} objects in an answer (JSON, or the Python-style quotes the prompt shows)."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    body = text[start : end + 1]
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        try:
            data = ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if not isinstance(data, list):
        return None
    items = []
    for entry in data:
        if isinstance(entry, dict) and all(isinstance(entry.get(f), str) and entry[f].strip() for f in fields):
            items.append({f: entry[f].strip() for f in fields})
    return items or None


def request_body(unit: Unit, spec: dict[str, Any], model: str, max_tokens: int | None, structured: bool) -> dict:
    task = spec["tasks"][unit.task]
    prompt = Template(task["prompt"]).safe_substitute(context=unit.context)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **spec.get("request", {})}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if structured:
        body["response_format"] = json_schema(task["fields"])
    return body


def done_ids(raw: Path) -> set[str]:
    """Requests already answered with parseable items (a killed run's last line may be cut: skipped)."""
    done = set()
    if raw.exists():
        from lceval.api import files

        for line in files.read_text(raw).splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("items") and "id" in entry:
                done.add(entry["id"])
    return done


def assemble(out: Path, spec: dict[str, Any], documents: dict[str, str]) -> dict[str, int]:
    """OUT/<task>.jsonl: per document, one conversation of all its parsed items, in chunk order."""
    latest: dict[str, dict[str, Any]] = {}
    for line in (out / "requests.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("items") or entry["id"] not in latest:
            latest[entry["id"]] = entry
    counts = {}
    for task, settings in spec["tasks"].items():
        per_doc: dict[str, list[tuple[int, dict[str, str]]]] = {}
        for entry in latest.values():
            if entry["task"] == task and entry.get("items"):
                per_doc.setdefault(entry["document"], []).extend((entry["index"], i) for i in entry["items"])
        if not per_doc:
            continue
        with (out / f"{task}.jsonl").open("w", encoding="utf-8") as handle:
            for name in sorted(per_doc):
                pairs = [item for _, item in sorted(per_doc[name], key=lambda p: p[0])]
                turns = []
                for n, item in enumerate(pairs):
                    question = item.get("question") or Template(settings.get("question", "${character}")) \
                        .safe_substitute(character=item.get("character", ""))
                    answer = item.get("answer") or item.get("summary", "")
                    content = f"{documents[name]}\n\n{question}" if n == 0 else question
                    turns += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
                handle.write(json.dumps({"conversations": turns, "task": task, "document": name},
                                        ensure_ascii=False) + "\n")
        counts[task] = len(per_doc)
    return counts


def synth(documents_dir: Path, out: Path, base_url: str, *, model: str | None = None, tasks: list[str] | None = None,
          prompts: Path | None = None, concurrency: int = 4, max_retries: int = 5, timeout: float = 600.0,
          api_key_env: str | None = None, max_tokens: int | None = None, structured: bool = True,
          limit: int | None = None, console=None) -> dict[str, Any]:
    """Send every unanswered request (at most `concurrency` in flight), append answers, assemble conversations."""
    from lceval.http.client import (
        ApiClient,
        LoopThread,
        RequestRefused,
        RetryPolicy,
        ServerDown,
        chat_text,
        close_clients,
        parse_base_urls,
        pick_model,
        read_api_key,
        refused,
        spread,
    )

    spec = load_spec(prompts)
    docs = read_documents(documents_dir)
    units = plan_units(docs, spec, tasks or list(spec["tasks"]))
    if limit is not None:
        units = units[:limit]
    urls = parse_base_urls(base_url)
    if not urls:
        raise UserError("lceval data synth needs the teacher's address; pass --base-url http://HOST:PORT.")
    raw = out / "requests.jsonl"
    done = done_ids(raw)
    todo = [u for u in units if u.id not in done]
    policy = RetryPolicy(max_retries=max_retries, timeout=timeout)
    loop = LoopThread()
    lock = threading.Lock()
    stats = {"sent": 0, "parsed": 0, "unparsed": 0, "skipped_done": len(units) - len(todo)}
    try:
        key = read_api_key(api_key_env)
        clients = [ApiClient(url, key, policy, concurrency) for url in urls]
        try:
            models = loop.run(clients[0].request("GET", "/v1/models"))["data"]
        except (ServerDown, RequestRefused) as err:
            raise UserError(f"teacher server {urls[0]} does not answer /v1/models ({err}); start it or fix "
                            "--base-url.") from None
        name = pick_model(urls[0], models, model)["id"]
        from lceval.api import files

        files.ensure_dir(out, "--output-dir")  # only now: a teacher that does not answer leaves nothing behind

        async def call(client, i: int) -> dict[str, Any]:
            unit = todo[i]
            body = request_body(unit, spec, name, max_tokens, structured)
            try:
                answer = await client.request("POST", "/v1/chat/completions", body)
            except RequestRefused as err:
                raise refused(err, "a synthesis request", "check --model and the prompt length against the "
                              "server's --max-model-len") from None
            return chat_text(answer)

        def emit(i: int, text: str) -> None:
            unit = todo[i]
            items = parse_items(text, spec["tasks"][unit.task]["fields"])
            entry = {"id": unit.id, "task": unit.task, "document": unit.document, "index": unit.index,
                     "items": items, "raw": None if items else text}
            with lock, raw.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            stats["sent"] += 1
            stats["parsed" if items else "unparsed"] += 1
            if console is not None:
                console.print(f"{unit.id}: {len(items) if items else 'no'} items", highlight=False)

        try:
            loop.run(spread(clients, len(todo), concurrency, call, emit))
        except ServerDown as err:
            raise UserError(f"teacher server stopped answering ({err}); what finished is in {raw}, so rerun the "
                            "same command to continue.") from None
        finally:
            loop.run(close_clients(clients))
    finally:
        loop.close()
    stats["conversations"] = assemble(out, spec, dict(docs)) if raw.exists() else {}
    (out / "synth_summary.json").write_text(json.dumps({**stats, "model": name, "base_url": urls[0]}, indent=2) + "\n",
                                            encoding="utf-8")
    return stats

