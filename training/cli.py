"""`lceval train`, `lceval export` and `lceval data synth`, registered on the main app by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the training commands to the lceval app (harness/cli.py calls this)."""
    from lceval.cli import console

    @app.command()
    def train(
        recipe: Annotated[Path, typer.Option(help="Recipe YAML, e.g. recipes/llama3-8b-instruct-80k-qlora.yaml.")],
        output_dir: Annotated[Path, typer.Option(help="Adapter and checkpoints; rerun to resume a killed run.")],
        overrides: Annotated[list[str] | None, typer.Argument(
            help="SECTION.KEY=VALUE overrides of the recipe, e.g. training.learning_rate=1e-4.")] = None,
    ) -> None:
        """Train a (Q)LoRA context extension from a recipe; resumes from the last checkpoint in --output-dir."""
        from lceval.training.recipe import load_recipe
        from lceval.training.train import train as run_training

        run_training(load_recipe(recipe, overrides or []), output_dir, console)

    @app.command()
    def export(
        adapter: Annotated[Path, typer.Argument(help="The --output-dir of a finished lceval train run.")],
        output_dir: Annotated[Path, typer.Option(help="Folder for the merged checkpoint.")],
        merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into its base (required).")] = False,
        dtype: Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: the recipe's "
                                                       "export.dtype).")] = None,
        base: Annotated[Path | None, typer.Option(help="The base model folder, if it moved since training.")] = None,
    ) -> None:
        """Merge a trained adapter into its base model, with the RoPE it was trained with (for vLLM and others)."""
        from lceval.errors import UserError
        from lceval.training.export import merge as merge_adapter

        if not merge:
            raise UserError("lceval export only merges for now; pass --merge.")
        path = merge_adapter(adapter, output_dir, dtype=dtype, base=base)
        console.print(f"merged checkpoint: {path}")

    data = typer.Typer(no_args_is_help=True, help="Training data: synthesis.")
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
        concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 4,
        max_retries: Annotated[int, typer.Option(help="Retries per request, with exponential backoff.")] = 5,
        request_timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 600.0,
        api_key_env: Annotated[str | None, typer.Option(help="Environment variable with the API key.")] = None,
        max_tokens: Annotated[int | None, typer.Option(help="Override the prompts file's max_tokens.")] = None,
        structured: Annotated[bool, typer.Option("--structured/--no-structured",
                                                 help="Ask for JSON by schema (response_format).")] = True,
        limit: Annotated[int | None, typer.Option(help="Only the first N requests.")] = None,
    ) -> None:
        """Build the seed paper's synthetic long-context QA and summary data with a teacher model."""
        from lceval.errors import UserError
        from lceval.training.synth import synth as run_synth

        if concurrency < 1:
            raise UserError("--concurrency must be at least 1.")
        names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        stats = run_synth(documents, output_dir, base_url, model=model, tasks=names, prompts=prompts,
                          concurrency=concurrency, max_retries=max_retries, timeout=request_timeout,
                          api_key_env=api_key_env, max_tokens=max_tokens, structured=structured, limit=limit,
                          console=console)
        console.print(f"synth: {stats['sent']} answered ({stats['parsed']} parsed, {stats['unparsed']} not), "
                      f"{stats['skipped_done']} done before; conversations {stats['conversations']} in {output_dir}")
