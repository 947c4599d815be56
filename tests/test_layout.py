"""The package layout is the architecture: layers import downwards only, stages never import each
other, and no import cycle appears (the plan a newcomer reads in ``ptm/`` stays true)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each part of ptm and what it may import (errors, progress, files and records are the floor everyone
# stands on; config turns Hydra configs into dataclasses for the entry points and is imported by
# none of ptm).
FLOOR = {"errors", "progress", "files", "records"}
ALLOWED = {
    "errors": set(),
    "progress": set(),
    "files": {"errors"},  # a full disk is reported as bad input is: one line
    "data": FLOOR,
    "models": FLOOR | {"data"},
    "training": FLOOR,
    "tasks": FLOOR | {"data", "models", "training"},
    "tf": FLOOR | {"data", "models"},  # a converted folder carries a model card
    "records": FLOOR,
    "plots": set(),  # the label-efficiency plot, drawn by the report and by make docs
    "config": FLOOR | {"training"},
}
STAGES = ("pretrain", "finetune", "convert")


def imports_of(path: Path) -> set[str]:
    """Modules a file imports (top-level and inside functions alike)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def part(module: str) -> str:
    """``ptm.data.tokenizer`` -> ``data``; ``ptm.errors`` -> ``errors``."""
    return module.split(".")[1]


def test_ptm_layers_import_downwards_only() -> None:
    assert {p.stem if p.is_file() else p.name for p in (ROOT / "ptm").iterdir()} - {
        "__init__",
        "__pycache__",
    } == set(ALLOWED)
    wrong = []
    for path in (ROOT / "ptm").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module == "ptm.__init__":
            continue
        mine = part(module)
        for target in imports_of(path):
            if not target.startswith("ptm.") or target.count(".") < 1:
                continue
            other = part(target)
            if other != mine and other in ALLOWED and other not in ALLOWED[mine]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_stages_share_code_through_ptm_only() -> None:
    wrong = []
    for stage in STAGES:
        for path in (ROOT / stage).rglob("*.py"):
            for target in imports_of(path):
                top = target.split(".")[0]
                if top in STAGES and top != stage:
                    wrong.append(f"{path.relative_to(ROOT)} imports {target}")
                if top in ("sweeps", "bench", "docs", "tests"):
                    wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    for path in (ROOT / "ptm").rglob("*.py"):
        for target in imports_of(path):
            if target.split(".")[0] in (*STAGES, "sweeps", "bench", "docs", "tests"):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "ptm").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = set()
    for module in graph:
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        graph[module] = {t for t in imports_of(path) if t in graph and t != module}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_model_code_exported_folders_carry_needs_only_torch_and_transformers() -> None:
    # ptm.models.modeling_mean_pooling is copied into fine-tuned model folders and loaded there
    # by transformers (trust_remote_code) on machines without ptm.
    imports = imports_of(ROOT / "ptm" / "models" / "modeling_mean_pooling.py")
    assert {name.split(".")[0] for name in imports} <= {"__future__", "torch", "transformers"}


# Read in one sitting: functions of the library and the stages stay under this many lines (a
# longer one is several steps that want names of their own), files under FILE_LINES.
FUNCTION_LINES = 100
FILE_LINES = 500
# Files longer than that because they hold one job that does not cut well, and why.
LONG_FILES = {
    "ptm/tasks/kinds.py": "the four task kinds behind one protocol, each a class",
    "ptm/tf/convert.py": "TF <-> transformers conversion both ways, sharing its name maps",
}


def test_functions_and_files_are_short_enough_to_read() -> None:
    long_functions, long_files = [], []
    for folder in ("ptm", "pretrain", "finetune", "convert", "sweeps"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            name = str(path.relative_to(ROOT))
            if len(text.splitlines()) > FILE_LINES and name not in LONG_FILES:
                long_files.append(f"{name} ({len(text.splitlines())} lines)")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > FUNCTION_LINES:
                        long_functions.append(f"{name}:{node.lineno} {node.name} ({lines})")
    assert not long_functions, f"split these into steps with names: {long_functions}"
    assert not long_files, f"files with more than one job? {long_files}"
