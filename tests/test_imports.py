"""The package imports downward: no module imports one that imports it back, at the top of a
file or inside a function; and each shared constant has one home."""

from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hyperx_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, here: str, modules: set[str]) -> set[str]:
  """Package modules imported anywhere in a module (functions included)."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from this module's package, `level - 1` packages up
        package = here if _is_package(here) else here.rpartition(".")[0]
        for _ in range(node.level - 1):
          package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
      names = [base] + [f"{base}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      # `from hyperx_jax import run` imports the module hyperx_jax.run.
      while name and name not in modules:
        name = name.rpartition(".")[0]
      if name and name != here and name != "hyperx_jax":
        out.add(name)
  return out


def _is_package(name: str) -> bool:
  return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def import_graph() -> dict[str, set[str]]:
  files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  modules = set(files)
  return {
      name: _imported(ast.parse(path.read_text()), name, modules) for name, path in files.items()
  }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Every elementary cycle's shortest representative, by depth-first search."""
  cycles, state = [], {}

  def visit(node: str, stack: list[str]) -> None:
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt) :] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  return cycles


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  assert {"hyperx_jax.train", "hyperx_jax.run", "hyperx_jax.evaluate"} <= set(graph)
  assert "hyperx_jax.run" in graph["hyperx_jax.evaluate"]
  cycles = find_cycles(graph)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_sees_function_level_imports(tmp_path):
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert find_cycles(graph) == [["a", "b", "c", "a"]]
  code = "import os\ndef f():\n  from hyperx_jax import train\n"
  modules = {"hyperx_jax.train", "hyperx_jax.evaluate"}
  assert _imported(ast.parse(code), "hyperx_jax.evaluate", modules) == {"hyperx_jax.train"}


def test_train_evaluate_and_export_go_through_run():
  graph = import_graph()
  for module in ("hyperx_jax.evaluate", "hyperx_jax.export"):
    assert "hyperx_jax.train" not in graph[module], module
  assert "hyperx_jax.train" not in graph["hyperx_jax.run"]
  # The models layer never reads a config: it imports no trainer-side module, and of the
  # config only its vocabulary and typed sections.
  upper = {
      "hyperx_jax.config.spec",
      "hyperx_jax.config.environment",
      "hyperx_jax.config.common",
      "hyperx_jax.config.changes",
      "hyperx_jax.run",
      "hyperx_jax.train",
  }
  for name, imports in graph.items():
    if name.startswith("hyperx_jax.models"):
      assert not imports & upper, (name, imports & upper)


PURE_CONFIG = (
    "hyperx_jax.config",
    "hyperx_jax.config.vocabulary",
    "hyperx_jax.config.fields",
    "hyperx_jax.config.sections",
    "hyperx_jax.config.spec",
    "hyperx_jax.config.changes",
    "hyperx_jax.config.common",
)


def test_the_config_layer_imports_no_data_models_or_metrics():
  """Its defaults, vocabulary and pure checks stand alone; only `config.environment` (the checks
  that need the disk, a device or a checkpoint) looks below."""
  graph = import_graph()
  assert graph["hyperx_jax.config.vocabulary"] == graph["hyperx_jax.errors"] == set()
  for name in PURE_CONFIG:
    below = {
        m for m in graph[name] if not m.startswith("hyperx_jax.config") and m != "hyperx_jax.errors"
    }
    assert not below, (name, below)
  assert "hyperx_jax.data.sources" in graph["hyperx_jax.config.environment"]


SHARED_CONSTANTS = (
    "METHODS",
    "TASK_KINDS",
    "IGNORE_INDEX",
    "IGNORE",
    "DTYPES",
    "METRICS",
    "NER_LABELS",
    "UPOS_TAGS",
    "XNLI_LABELS",
    "PLACEMENTS",
    "MLM_RATE",
    "TOKEN_METRICS",
    "METHOD_NAMES",
    "SOURCE_TYPES",
    "REMAT_POLICIES",
)


def test_each_shared_constant_is_defined_once():
  roots = [PACKAGE, PACKAGE.parent / "configs"]
  where: dict[str, list[str]] = {}
  for root in roots:
    for path in root.rglob("*.py"):
      for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
          for target in node.targets:
            if isinstance(target, ast.Name) and target.id in SHARED_CONSTANTS:
              where.setdefault(target.id, []).append(str(path.relative_to(PACKAGE.parent)))
  assert all(len(files) == 1 for files in where.values()), where
  in_vocabulary = {
      name for name, files in where.items() if files == ["hyperx_jax/config/vocabulary.py"]
  }
  assert in_vocabulary >= {"METHODS", "TASK_KINDS", "IGNORE_INDEX", "DTYPES", "NER_LABELS"}


def test_code_cites_only_files_in_the_repository():
  pattern = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared")
  roots = (PACKAGE, PACKAGE.parent / "configs", PACKAGE.parent / "tests")
  offenders = [
      str(p)
      for root in roots
      for p in root.rglob("*.py")
      if p.name != "test_imports.py" and pattern.search(p.read_text())
  ]
  assert not offenders, offenders
