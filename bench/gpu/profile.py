"""Where a training step's time goes: ``torch.profiler`` over a few steps of a real run.

    python -m bench.gpu.profile pretrain +experiment=bert_mini_full 'data.corpus=[...]'
    python -m bench.gpu.profile finetune task=sentiment model.path=PATH runtime.compile=true
    python -m bench.gpu.profile pretrain +experiment=tiny 'data.corpus=[...]' --steps 3 --skip 2

It runs the stage's own loop (``pretrain.train.run`` / ``finetune.train.run``, the given Hydra
overrides plus a step budget; no probe, evaluation and checkpoints only after the window), lets
``--skip`` optimizer steps pass (compilation, the first CUDA-graph recordings, warm caches),
then profiles ``--steps`` steps and splits their time into categories that add up to the total:

* ``matmul`` — matrix products (aten::mm / addmm / bmm / linear, cuBLAS, CUTLASS and Triton
  matmul kernels) outside the two below;
* ``attention`` — scaled-dot-product attention (SDPA, flash / memory-efficient / cuDNN kernels);
* ``head`` — the vocabulary projection of the MLM head (any matrix product with a vocabulary-wide
  operand, and its gradients) and the loss (log-softmax, NLL / cross-entropy); for fine-tuning
  the task loss;
* ``optimizer`` — the whole optimizer step as the loop runs it: unscale, gradient clipping,
  AdamW, zeroing;
* ``other`` — everything else the device computes: elementwise, LayerNorm, GELU, dropout,
  embeddings, reductions, copies;
* ``idle`` — on a GPU, the time inside the profiled window when no kernel runs: the host has not
  launched the next one yet (launch overhead, Python, synchronisations, the feed). On a CPU, the
  main thread's time outside any operator (Python, the loop, data).

The total is the GPU's busy-or-idle span of the window on a GPU (first kernel start to last
kernel end of the kernels launched in it), the window's wall time on a CPU. Kernels are assigned
through the host operator that launched them (each kernel's launch is matched by its
correlation id to the runtime call, and that call's enclosing operators are its stack); inside a
CUDA graph or a Triton kernel without an operator, by the kernel's name. Overlapping kernels
(several streams) count once, for the one that started first.

Writes to ``--out``: ``profile.json`` (a record, `ptm.records`: the table, the top operators or
kernels, the command, commit and machine), ``profile.md`` (the same as a table) and
``trace.json.gz`` (the Chrome trace: chrome://tracing or https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CATEGORIES = ("matmul", "attention", "head", "optimizer", "other", "idle")
LABELS = {
    "matmul": "matrix products",
    "attention": "attention (SDPA)",
    "head": "MLM head: vocabulary projection and loss",
    "optimizer": "optimizer step (unscale, clip, AdamW, zero)",
    "other": "elementwise and other kernels",
    "idle": "idle: host gaps between kernels",
}
CPU_IDLE_LABEL = "outside operators: Python, the loop, data"
# Profiler ranges this tool wraps around the loop's optimizer step and around ptm's attention
# (on a CPU ptm trains attention as plain matrix products, which only the range tells apart).
OPTIMIZER_SCOPE = "ptm.optimizer_step"
ATTENTION_SCOPE = "ptm.attention"
_MATMUL_OP = re.compile(
    r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|addmv|mv|_addmm_activation|_scaled_mm)$"
    r"|^(Mm|Addmm|Bmm|Baddbmm)Backward"
)
_MATMUL_KERNEL = re.compile(r"gemm|gemv|cutlass|xmma|nvjet|cublas|triton_tem_fused_.*mm", re.I)
_ATTENTION = re.compile(r"scaled_dot_product|attention|flash|fmha|sdpa", re.I)
_LOSS = re.compile(r"log_?softmax|nll_?loss|cross_?entropy", re.I)
_OPTIMIZER = re.compile(r"^Optimizer\.|^" + re.escape(OPTIMIZER_SCOPE) + "$")
_BACKWARD = re.compile(r"^\w+Backward\d*$")  # an autograd node (its forward op: same sequence nr)
_DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
_HOST_CATS = {"cpu_op", "user_annotation"}
_LAUNCH_CATS = {"cuda_runtime", "cuda_driver"}
# Runtime calls that make the host wait for the GPU (``.item()``, ``.cpu()``, a blocking copy,
# ``torch.cuda.synchronize``): each one drains the queue of launched kernels.
_SYNC = re.compile(r"^cuda(Stream|Device|Event)Synchronize$")


@dataclass(eq=False)
class _Span:
    """A host operator or profiler range."""

    name: str
    start: float  # microseconds, as the trace has them
    end: float
    dims: list = field(default_factory=list)  # the operator's input shapes (record_shapes)
    seq: int | None = None  # autograd sequence number: links a backward node to its forward op
    stack: tuple[_Span, ...] = ()  # the spans enclosing it on its thread, outermost first
    children: float = 0.0  # microseconds covered by directly nested spans


def _nest(spans: list[_Span]) -> None:
    """Set every span's ``stack`` and ``children`` (the spans of one thread, properly nested)."""
    stack: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        while stack and stack[-1].end <= span.start:
            stack.pop()
        span.stack = tuple(stack)
        if stack:
            stack[-1].children += min(span.end, stack[-1].end) - span.start
        stack.append(span)


def _open_at(spans: list[_Span], moments: list[tuple[float, Any]]) -> dict[Any, tuple]:
    """For each ``(time, key)``, the spans of one thread open at that time, outermost first."""
    out: dict[Any, tuple] = {}
    stack: list[_Span] = []
    items = sorted(spans, key=lambda s: (s.start, -s.end))
    i = 0
    for t, key in sorted(moments, key=lambda m: m[0]):
        while i < len(items) and items[i].start <= t:
            while stack and stack[-1].end <= items[i].start:
                stack.pop()
            stack.append(items[i])
            i += 1
        out[key] = tuple(s for s in stack if s.end > t)
    return out


def categorize(name: str, stack: tuple[_Span, ...], vocab: set[int]) -> str:
    """The category of an operator or kernel called ``name`` run inside ``stack`` (its host
    operators, outermost first, with the forward operators of the backward nodes among them).
    The first rule that matches wins: optimizer, head, attention, matmul, other."""
    names = [s.name for s in stack]
    if any(_OPTIMIZER.search(n) for n in names):
        return "optimizer"
    wide = any(_MATMUL_OP.search(s.name) and not vocab.isdisjoint(_flat(s.dims)) for s in stack)
    if wide or any(_LOSS.search(n) for n in (*names, name)):
        return "head"
    if any(_ATTENTION.search(n) for n in (*names, name)):
        return "attention"
    if _MATMUL_KERNEL.search(name) or any(_MATMUL_OP.search(n) for n in (*names, name)):
        return "matmul"
    return "other"


def _flat(dims: Any) -> list[int]:
    if isinstance(dims, int):
        return [dims]
    if isinstance(dims, list):
        return [d for x in dims for d in _flat(x)]
    return []


@dataclass(frozen=True)
class Table:
    """Seconds of the profiled window by category (``CATEGORIES``), summing to ``total``."""

    timeline: str  # "gpu" (kernels on the device) or "cpu" (operators on the main thread)
    steps: int  # optimizer steps in the window
    total: float  # seconds
    seconds: dict[str, float]
    host_seconds: float  # the window's wall time on the host
    top: list[dict[str, Any]]  # the operators / kernels taking the most time
    syncs: list[dict[str, Any]] = field(default_factory=list)  # host waits on the GPU, by caller
    waits_per_step: float = 0.0  # all of them

    def share(self, category: str) -> float:
        return self.seconds[category] / self.total if self.total > 0 else 0.0


class _Ranking:
    """Time by (name, category): the table's top operators or kernels."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)

    def add(self, name: str, category: str, seconds: float) -> None:
        self.seconds[name, category] += seconds

    def top(self, n_steps: int, n: int) -> list[dict[str, Any]]:
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:n]
        return [
            {"name": name, "category": cat, "ms_per_step": 1e3 * s / max(n_steps, 1)}
            for (name, cat), s in ranked
        ]


def summarize(events: list[dict], vocab: set[int], top: int = 15) -> Table:
    """The table of a Chrome trace's ``traceEvents`` (what ``export_chrome_trace`` writes): the
    GPU timeline when the window launched kernels, else the CPU's main thread. ``vocab``: the
    widths that mark a matrix product as the MLM head's."""
    host: dict[Any, list[_Span]] = defaultdict(list)
    steps: list[_Span] = []
    main = None  # the thread the loop runs on: the one with the ProfilerStep ranges
    launches: dict[Any, tuple[Any, float]] = {}
    kernels = []
    waits: list[tuple[Any, float, int]] = []
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        cat, args = e.get("cat"), e.get("args") or {}
        start, end = float(e["ts"]), float(e["ts"]) + float(e["dur"])
        if cat in _HOST_CATS:
            span = _Span(e["name"], start, end, args.get("Input Dims") or [])
            span.seq = args.get("Sequence number")
            host[e.get("tid")].append(span)
            if e["name"].startswith("ProfilerStep#"):
                steps.append(span)
                main = e.get("tid")
        elif cat in _LAUNCH_CATS:
            if _SYNC.match(e["name"]):
                waits.append((e.get("tid"), start, len(waits)))
            if "correlation" in args:
                launches[args["correlation"]] = (e.get("tid"), start)
        elif cat in _DEVICE_CATS:
            kernels.append((e["name"], start, end, args.get("correlation")))
    if not steps:
        raise ValueError("the trace has no ProfilerStep ranges: was the window ever reached?")
    forward: dict[int, tuple[_Span, ...]] = {}  # sequence number -> forward op and its stack
    for spans in host.values():
        _nest(spans)
        for span in sorted(spans, key=lambda s: s.start):
            if span.seq is not None and not _BACKWARD.match(span.name):
                forward.setdefault(span.seq, (*span.stack, span))

    def context(stack: tuple[_Span, ...]) -> tuple[_Span, ...]:
        linked = [f for s in stack if _BACKWARD.match(s.name) for f in forward.get(s.seq, ())]
        return (*stack, *linked)

    lo, hi = min(s.start for s in steps), max(s.end for s in steps)
    window = [k for k in kernels if k[3] in launches and lo <= launches[k[3]][1] <= hi]
    if window:  # and kernels of no known launch that ran meanwhile: busy time, named by name
        first, last = min(k[1] for k in window), max(k[2] for k in window)
        window += [k for k in kernels if k[3] not in launches and first <= k[1] < last]
    host_seconds = sum(s.end - s.start for s in steps) / 1e6
    if window:
        table = _gpu_table(window, launches, host, vocab, context, len(steps), top)
    else:
        table = _cpu_table(steps, host[main], vocab, context, top)
    inside = [w for w in waits if lo <= w[1] <= hi]
    syncs = _syncs(inside, host, len(steps), top)
    return Table(
        table[0], len(steps), table[1], table[2], host_seconds, table[3], syncs,
        len(inside) / len(steps),
    )  # fmt: skip


def _syncs(waits, host, n_steps: int, top: int) -> list[dict[str, Any]]:
    """How often a step made the host wait for the GPU, by the operators around each wait (the
    outermost and the innermost two: ``aten::item > aten::_local_scalar_dense``)."""
    moments: dict[Any, list] = defaultdict(list)
    for tid, t, key in waits:
        moments[tid].append((t, key))
    counts: dict[str, int] = defaultdict(int)
    for tid, items in moments.items():
        for stack in _open_at(host.get(tid, []), items).values():
            names = [s.name for s in stack if not s.name.startswith("ProfilerStep#")]
            shown = names if len(names) <= 3 else [names[0], "...", *names[-2:]]
            counts[" > ".join(shown) or "(outside any operator)"] += 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return [{"where": where, "per_step": n / max(n_steps, 1)} for where, n in ranked]


def _gpu_table(kernels, launches, host, vocab, context, n_steps, top):
    moments: dict[Any, list] = defaultdict(list)
    for _, _, _, corr in kernels:
        if corr in launches:
            tid, t = launches[corr]
            moments[tid].append((t, corr))
    stacks = {}
    for tid, items in moments.items():
        stacks.update(_open_at(host.get(tid, []), items))
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    ranking = _Ranking()
    begin = min(k[1] for k in kernels)
    covered = begin  # the union of the kernels so far ends here
    for name, start, end, corr in sorted(kernels, key=lambda k: (k[1], k[2])):
        own = max(end - max(start, covered), 0.0) / 1e6  # overlaps count once
        covered = max(covered, end)
        category = categorize(name, context(stacks.get(corr, ())), vocab)
        seconds[category] += own
        ranking.add(name, category, own)
    total = (covered - begin) / 1e6
    seconds["idle"] = max(total - sum(seconds.values()), 0.0)
    return "gpu", total, seconds, ranking.top(n_steps, top)


def _cpu_table(steps, main, vocab, context, top):
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    ranking = _Ranking()
    for span in main:
        if not any(w.start <= span.start < w.end for w in steps):
            continue
        own = max(span.end - span.start - span.children, 0.0) / 1e6
        if span.name.startswith("ProfilerStep#"):
            seconds["idle"] += own
            continue
        category = categorize(span.name, context((*span.stack, span)), vocab)
        seconds[category] += own
        ranking.add(span.name, category, own)
    total = sum(w.end - w.start for w in steps) / 1e6
    return "cpu", total, seconds, ranking.top(len(steps), top)


def render(metrics: dict[str, Any]) -> str:
    """The markdown table of a profile record's ``metrics`` (what docs/GPU.md shows)."""
    steps = metrics["steps"]
    labels = dict(LABELS)
    if metrics["timeline"] == "cpu":
        labels["idle"] = CPU_IDLE_LABEL
    if metrics.get("stage") == "finetune":
        labels["head"] = "loss (cross-entropy)"
    lines = ["| where the time goes | ms a step | share |", "|---|---:|---:|"]
    for cat in CATEGORIES:
        label = labels[cat]
        ms = 1e3 * metrics["seconds"][cat] / steps
        lines.append(f"| {label} | {ms:.2f} | {100 * metrics['share'][cat]:.1f} % |")
    total_ms = 1e3 * metrics["total_seconds"] / steps
    host_ms = 1e3 * metrics["host_seconds"] / steps
    lines.append(f"| **total** ({metrics['timeline'].upper()} timeline) | {total_ms:.2f} | 100 % |")
    lines.append("")
    lines.append(f"{steps} steps; the host's wall time: {host_ms:.2f} ms a step.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- running a stage


def stage_runner(stage: str, overrides: list[str], run_dir: Path, steps: int) -> Callable[[], Any]:
    """The stage's ``run`` on its composed config with ``overrides`` and a budget of ``steps``
    optimizer steps, nothing evaluated or saved before the last."""
    from ptm.config import compose

    never = str(10**9)
    if stage == "pretrain":
        from pretrain.config import PretrainConfig
        from pretrain.train import run
        from ptm.config import to_dataclass

        budget = (
            f"train.max_steps={steps}", "train.max_minutes=null", "train.max_tokens=null",
            f"train.eval_every={never}", f"train.save_every={never}", "data.probe=null",
        )  # fmt: skip
        data = compose("pretrain", (*overrides, *budget))
        data["run_dir"] = str(run_dir)
        cfg = to_dataclass(PretrainConfig, data)
    elif stage == "finetune":
        from finetune.config import build_config
        from finetune.train import run

        budget = (
            f"train.max_steps={steps}", "train.max_minutes=null", f"train.eval_every={never}",
            "train.patience=null",
        )  # fmt: skip
        data = compose("finetune", (*overrides, *budget))
        data["run_dir"] = str(run_dir)
        cfg = build_config(data)
    else:
        raise ValueError(f"stage {stage!r}: use pretrain or finetune")
    return lambda: run(cfg)


def profile_stage(
    stage: str, overrides: list[str], out: Path, steps: int = 20, skip: int = 10
) -> dict[str, Any]:
    """Run ``stage`` for ``skip + 1 + steps`` optimizer steps, profile the last ``steps``, and
    write ``profile.json`` (record), ``profile.md`` and ``trace.json.gz`` into ``out``; returns
    the record."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from ptm.records import RunClock, machine, write_record
    from ptm.training import loop

    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    clock = RunClock.start()
    trace = out / "trace.json"
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    when = schedule(wait=skip, warmup=1, active=steps, repeat=1)
    run = stage_runner(stage, overrides, run_dir, skip + 1 + steps + 1)
    with (
        profile(
            activities=activities,
            schedule=when,
            record_shapes=True,
            on_trace_ready=lambda p: p.export_chrome_trace(str(trace)),
        ) as prof,
        _scoped(loop, "optimizer_step", OPTIMIZER_SCOPE, after=prof.step),
    ):
        if torch.cuda.is_available():  # SDPA's kernels name themselves there
            run()
        else:
            from ptm.models import attention, masked_encoder

            with (
                _scoped(attention, "attend", ATTENTION_SCOPE),
                _scoped(masked_encoder, "attend", ATTENTION_SCOPE),
            ):
                run()
    if not trace.is_file():
        raise RuntimeError(f"no trace written: the run ended before step {skip + 1} of the window")
    events = json.loads(trace.read_text())["traceEvents"]
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    table = summarize(events, _vocab_sizes(run_dir) if stage == "pretrain" else set())
    with trace.open("rb") as src, gzip.open(out / "trace.json.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    metrics = {
        "stage": stage,
        "timeline": table.timeline,
        "steps": table.steps,
        "total_seconds": table.total,
        "host_seconds": table.host_seconds,
        "seconds": table.seconds,
        "share": {c: table.share(c) for c in CATEGORIES},
        "host_waits_per_step": table.waits_per_step,
    }
    record = write_record(
        out / "profile.json",
        kind="profile",
        config={"stage": stage, "overrides": overrides, "steps": steps, "skip": skip},
        metrics=metrics,
        clock=clock,
        machine_info=machine(summary.get("device"), summary.get("precision")),
        extra={"top": table.top, "host_waits": table.syncs, "run_summary": summary},
    )
    (out / "profile.md").write_text(
        render(metrics) + "\n" + _render_top(table.top) + "\n" + _render_syncs(table.syncs)
    )
    log.info("profile of %d %s steps -> %s\n%s", table.steps, stage, record, render(metrics))
    return json.loads(record.read_text())


@contextlib.contextmanager
def _scoped(module: Any, name: str, scope: str, after: Callable[[], None] | None = None):
    """``module.name`` replaced, while the block runs, by the same function inside a profiler
    range called ``scope`` (then ``after()``); inside ``torch.compile``'s tracing it is left
    as it is, so a compiled graph is the one a run compiles."""
    import torch
    from torch.profiler import record_function

    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return original(*args, **kwargs)
        with record_function(scope):
            result = original(*args, **kwargs)
        if after is not None:
            after()
        return result

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, original)


def _vocab_sizes(run_dir: Path) -> set[int]:
    """The width a matrix product of the MLM head has: the exported model's ``vocab_size``."""
    config = run_dir / "model" / "config.json"
    if not config.is_file():
        return set()
    size = json.loads(config.read_text()).get("vocab_size")
    return {size} if isinstance(size, int) else set()


def _render_top(top: list[dict[str, Any]]) -> str:
    lines = ["| operator / kernel | category | ms a step |", "|---|---|---:|"]
    for row in top:
        name = row["name"] if len(row["name"]) <= 80 else row["name"][:77] + "..."
        lines.append(f"| `{name}` | {row['category']} | {row['ms_per_step']:.3f} |")
    return "\n".join(lines) + "\n"


def _render_syncs(syncs: list[dict[str, Any]]) -> str:
    if not syncs:
        return "No host waits on the GPU in the window (or no GPU).\n"
    lines = ["| the host waited for the GPU in | times a step |", "|---|---:|"]
    lines += [f"| `{row['where']}` | {row['per_step']:.2f} |" for row in syncs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu.profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("stage", choices=["pretrain", "finetune"])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the stage's config")
    parser.add_argument("--steps", type=int, default=20, help="profiled optimizer steps")
    parser.add_argument("--skip", type=int, default=10, help="steps before the window")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    from ptm.config import register_resolvers

    register_resolvers()
    out = args.out or Path(tempfile.mkdtemp(prefix="ptm-profile-"))
    profile_stage(args.stage, args.overrides, out, args.steps, args.skip)


if __name__ == "__main__":
    main()
