"""`lceval train`, `lceval export`, `lceval data synth` and `lceval data retrieval`, registered on the lceval app
(lceval.cli.app) when lceval.cli imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lceval.api.settings import ExportFlags, SynthFlags, allowed
from lceval.cli.app import app, console
from lceval.training.retrieval import RetrievalSpec


def _h(text: str, cls: type, name: str) -> str:
    """A flag's help, ending in its range as its settings class checks it."""
    return f"{text} Allowed: {allowed(cls, name)}."


@app.command()
def train(
    recipe: Annotated[Path, typer.Option(help="Recipe YAML, e.g. recipes/llama3-8b-instruct-80k-qlora.yaml.")],
    output_dir: Annotated[Path, typer.Option(help="Adapter and checkpoints; rerun to resume a killed run.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="SECTION.KEY=VALUE overrides of the recipe, e.g. training.learning_rate=1e-4.")] = None,
) -> None:
    """Train a (Q)LoRA context extension from a recipe; resumes from the last checkpoint in --output-dir."""
    from lceval.api import files
    from lceval.training.data import load_mix
    from lceval.training.recipe import load_recipe
    from lceval.training.train import train as run_training

    resolved = load_recipe(recipe, overrides or [])
    load_mix(resolved.resolve(resolved.data.mix))  # the data-mix file, checked before anything is written
    if resolved.model.base == "builtin:tiny-llama":
        from lceval.training.train import tiny_llama_shape

        tiny_llama_shape(resolved)  # and the shape of a model built from scratch
    files.check_output_dir(output_dir, "--output-dir")
    run_training(resolved, output_dir, console)

@app.command()
def export(
    adapter: Annotated[Path, typer.Argument(help="The --output-dir of a finished lceval train run.")],
    output_dir: Annotated[Path, typer.Option(help="Folder for the merged checkpoint.")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into its base (required).")] = False,
    dtype: Annotated[str | None, typer.Option(help=_h("The merged checkpoint's dtype (default: the recipe's "
                                                      "export.dtype).", ExportFlags, "dtype"))] = None,
    base: Annotated[Path | None, typer.Option(help="The base model folder, if it moved since training.")] = None,
) -> None:
    """Merge a trained adapter into its base model, with the RoPE it was trained with (for vLLM and others)."""
    from lceval.api import files
    from lceval.api.errors import UserError
    from lceval.api.settings import flags
    from lceval.training.export import merge as merge_adapter

    if not merge:
        raise UserError("lceval export only merges for now; pass --merge.")
    dtype = flags(ExportFlags, dtype=dtype).dtype
    if not adapter.is_dir():
        raise UserError(f"adapter folder {adapter} does not exist or is not a folder; pass the --output-dir of a "
                        "finished lceval train run.")
    files.check_output_dir(output_dir, "--output-dir")
    path = merge_adapter(adapter, output_dir, dtype=dtype, base=base)
    console.print(f"merged checkpoint: {path}")

data = typer.Typer(no_args_is_help=True, help="Training data: synthesis with a teacher, and generated retrieval "
                                              "samples.")
app.add_typer(data, name="data")

@data.command("synth")
def synth(
    documents: Annotated[Path, typer.Argument(help="Folder of long documents (.txt, .md).")],
    output_dir: Annotated[Path, typer.Option(help="requests.jsonl and <task>.jsonl go here; rerun to continue.")],
    base_url: Annotated[str, typer.Option(help="The teacher's OpenAI-compatible server, e.g. http://HOST:8000.")],
    model: Annotated[str | None, typer.Option(help="Model name on the server (default: its one model).")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma list: single_detail, multi_detail, bio (default all).")]
    = None,
    prompts: Annotated[Path | None, typer.Option(help="Prompts file (default: the paper's, bundled).")] = None,
    concurrency: Annotated[int, typer.Option(help=_h("Requests in flight.", SynthFlags, "concurrency"))] = 4,
    max_retries: Annotated[int, typer.Option(help=_h("Retries per request, with exponential backoff.",
                                                     SynthFlags, "max_retries"))] = 5,
    request_timeout: Annotated[float, typer.Option(help=_h("Seconds per request.", SynthFlags,
                                                           "request_timeout"))] = 600.0,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable with the API key.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help=_h("Override the prompts file's max_tokens.", SynthFlags,
                                                           "max_tokens"))] = None,
    structured: Annotated[bool, typer.Option("--structured/--no-structured",
                                             help="Ask for JSON by schema (response_format).")] = True,
    limit: Annotated[int | None, typer.Option(help=_h("Only the first N requests.", SynthFlags, "limit"))] = None,
) -> None:
    """Build the seed paper's synthetic long-context QA and summary data with a teacher model."""
    from lceval.api import files
    from lceval.api.settings import flags
    from lceval.training.synth import synth as run_synth

    checked = flags(SynthFlags, tasks=tasks, concurrency=concurrency, max_retries=max_retries,
                    request_timeout=request_timeout, max_tokens=max_tokens, limit=limit)
    files.check_output_dir(output_dir, "--output-dir")
    stats = run_synth(documents, output_dir, base_url, model=model, tasks=checked.tasks or None, prompts=prompts,
                      concurrency=checked.concurrency, max_retries=checked.max_retries,
                      timeout=checked.request_timeout, api_key_env=api_key_env, max_tokens=checked.max_tokens,
                      structured=structured, limit=checked.limit, console=console)
    console.print(f"synth: {stats['sent']} answered ({stats['parsed']} parsed, {stats['unparsed']} not), "
                  f"{stats['skipped_done']} done before; conversations {stats['conversations']} in {output_dir}")

@data.command("retrieval")
def retrieval(
    output: Annotated[Path, typer.Option(help="JSON-lines file to write (replaced whole when done).")],
    samples: Annotated[int, typer.Option(help=_h("Samples to write.", RetrievalSpec, "samples"))] = 1000,
    min_chars: Annotated[int, typer.Option(help=_h("Smallest filler, in characters.", RetrievalSpec,
                                                   "min_chars"))] = 200,
    max_chars: Annotated[int, typer.Option(help=_h("Largest filler, in characters (about 3 a token).",
                                                   RetrievalSpec, "max_chars"))] = 1000,
    needle: Annotated[float, typer.Option(help=_h("Share of needle samples (chat).", RetrievalSpec,
                                                  "needle"))] = 0.45,
    key: Annotated[float, typer.Option(help=_h("Share of key samples (completion).", RetrievalSpec, "key"))]
    = 0.3,
    topic: Annotated[float, typer.Option(help=_h("Share of first-topic samples (chat).", RetrievalSpec,
                                                 "topic"))] = 0.25,
    copy: Annotated[float, typer.Option(help=_h("Share of said-twice word runs (plain text).", RetrievalSpec,
                                                "copy"))] = 0.0,
    distractors: Annotated[int, typer.Option(help=_h("Most other facts beside a needle.", RetrievalSpec,
                                                     "distractors"))] = 2,
    edges: Annotated[float, typer.Option(help=_h("Share of needles and keys set at the very start or end of the "
                                                  "filler (depths 0 and 100), half each.", RetrievalSpec,
                                                  "edges"))] = 0.0,
    fillers: Annotated[str, typer.Option(help=_h("Fillers of needles and keys: any (story, short or haystack at "
                                                 "random), story, short (a few sentences said over and over), "
                                                 "haystack, or lookalike (sentences about names a few letters "
                                                 "from the asked one, said over and over).",
                                                 RetrievalSpec, "fillers"))] = "any",
    seed: Annotated[int, typer.Option(help=_h("Seed: the same seed and settings give the same file.",
                                              RetrievalSpec, "seed"))] = 0,
) -> None:
    """Write seeded synthetic retrieval samples (needles, keys, first topics) that hold no evaluation text."""
    from lceval.api import files
    from lceval.api.settings import flags
    from lceval.running.progress import sample_progress
    from lceval.training.retrieval import write

    spec = flags(RetrievalSpec, samples=samples, min_chars=min_chars, max_chars=max_chars, needle=needle,
                 key=key, topic=topic, copy=copy, distractors=distractors, edges=edges, fillers=fillers,
                 seed=seed)
    files.check_output_file(output, "--output")
    with sample_progress(console) as progress:
        count = write(spec, output, progress)
    console.print(f"retrieval data: {count} samples in {output}")
