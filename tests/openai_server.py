"""Test helpers for the openai backend: a real vLLM OpenAI-compatible server on loopback, a real LoRA adapter,
and a TCP proxy whose close() makes a server vanish as a dead machine would (connections reset, then refused)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a free port, in its own process group.

    Started on construction and waited for in `ready()`, so that several servers (and an in-process engine) can
    start at the same time. `kill()` is SIGKILL to the whole group: the API server and its engine process.
    """

    def __init__(self, model: Path, log: Path, *, lora: dict[str, Path] | None = None, api_key: str | None = None,
                 memory: float = 0.15, max_model_len: int = 2048):
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                "--host", "127.0.0.1", "--port", str(self.port), "--max-model-len", str(max_model_len),
                "--dtype", "float32",
                "--gpu-memory-utilization", str(memory), "--disable-log-stats"]
        if lora:
            args += ["--enable-lora", "--max-lora-rank", "16", "--max-loras", "2",
                     "--lora-modules", *(f"{name}={path}" for name, path in lora.items())]
        if api_key:
            args += ["--api-key", api_key]
        env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING", TOKENIZERS_PARALLELISM="false")
        with log.open("wb") as handle:
            self.process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def ready(self, timeout: float = 300) -> str:
        """The base URL once /health answers 200; fails with the server's log if it died or took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM server not healthy after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crashed machine: no shutdown handlers run."""
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to the API server (it shuts its engine down), then SIGKILL to whatever is left of the group."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)  # the group this server leads (start_new_session)
        except ProcessLookupError:
            pass


def make_lora_adapter(model: Path, out: Path, seed: int = 1) -> Path:
    """A real PEFT LoRA adapter (rank 16) on the demo model with large weights, so that it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(20.0)
    peft_model.save_pretrained(out)
    return out


class TcpProxy:
    """127.0.0.1:port forwarded to a server's port, until close() resets every connection and stops listening."""

    def __init__(self, target_port: int):
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for sock in sockets:  # SO_LINGER 0: close() sends a reset, as a machine that died mid-answer
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass
