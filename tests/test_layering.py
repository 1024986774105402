"""The package's layering (issue 17 item 6), read from the source with ``ast``, so it holds for every module,
imported or not:

- no import cycles between modules (imports inside functions included: a cycle that only a lazy import
  closes is still two modules that cannot be understood apart);
- no arrow from a lower layer to a higher one (the layers are written in ``emvsbayes/__init__.py``'s
  docstring and in :data:`LAYERS` below, which must agree);
- generic modules name no model family: outside the family packages and ``emvsbayes/family.py`` nothing
  imports ``emvsbayes.coins`` / ``emvsbayes.gaussian`` or compares a family name string;
- no private name (``_x``) is imported from another module.

Each check lists what it found, so a failure names the modules to fix; the allow-lists hold the arrows
the refactoring of issue 17 left (each with its reason), and may only shrink.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import emvsbayes

PACKAGE = Path(emvsbayes.__file__).resolve().parent

#: Layers, lowest first: a module may import only from its own layer or lower ones. A module is placed by
#: the longest prefix listed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("emvsbayes.errors", "emvsbayes.paths", "emvsbayes.lazy_imports", "emvsbayes.seeds", "emvsbayes.cluster"),
    ("emvsbayes.em", "emvsbayes.family", "emvsbayes.limits", "emvsbayes.data", "emvsbayes.labels", "emvsbayes.spec",
     "emvsbayes.spec_keys", "emvsbayes.results", "emvsbayes.outputs", "emvsbayes.sampling", "emvsbayes.study.spec"),
    ("emvsbayes.uncertainty", "emvsbayes.comparison"),
    ("emvsbayes.coins", "emvsbayes.gaussian", "emvsbayes.poisson", "emvsbayes.hmm", "emvsbayes.ladder"),
    ("emvsbayes.runner", "emvsbayes.store", "emvsbayes.study.replicate", "emvsbayes.study.sbc", "emvsbayes.study.task"),
    ("emvsbayes.pipeline", "emvsbayes.report", "emvsbayes.study.run", "emvsbayes.study.report", "emvsbayes.study"),
    ("emvsbayes.api", "emvsbayes.cli", "emvsbayes.__main__", "emvsbayes"),
)

#: (importer, imported) arrows that go up a layer, each a lazy import inside a function, with why it stays.
UPWARD_ALLOWED = {
    # emvsbayes.study is callable as emvsbayes.api.study (the package replaces itself by a callable module)
    ("emvsbayes.study", "emvsbayes.api"),
}

#: Modules outside the family packages that still name a family (issue 17 left them; see the report).
NAMES_FAMILIES_ALLOWED = {
    "emvsbayes.__init__",  # the docstring's example
    "emvsbayes.spec",  # family-specific spec keys and checks
    "emvsbayes.spec_keys",  # the spec keys' documentation
    "emvsbayes.data.bundled",  # the data kind "coins" of a bundled data set (a data kind, not a family)
}

#: Private names imported across modules that remain (module, name).
PRIVATE_ALLOWED = {
    ("emvsbayes.report.lesson", "_coin_steps"),  # report/ is another helper's in issue 17
    ("emvsbayes.study.replicate", "_advance"),  # numpyro's block loop, shared with the study's sampler
    ("emvsbayes.study.replicate", "_start_values"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("emvsbayes", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str | None, bool]]:
    """(imported module, imported name or None, at module level) for every import of an emvsbayes module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    # imports under `if TYPE_CHECKING:` are for annotations only: never executed, so no arrow
    typing_only = {id(inner) for node in tree.body if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for inner in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        at_top = id(node) in top
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "emvsbayes":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((sub, None, at_top) if sub in MODULES else (node.module, alias.name, at_top))
        elif isinstance(node, ast.Import):
            out += [(alias.name, None, at_top) for alias in node.names if alias.name.split(".")[0] == "emvsbayes"]
    return out


def _layer(name: str) -> int:
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{name} is in no layer: add it to LAYERS and the package docstring"
    return layer


def _graph(top_only: bool = False) -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        targets = {target for target, _, at_top in _imports(name) if (at_top or not top_only)}
        # a module's own package (its __init__) is not an arrow worth drawing
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer_and_the_docstring_lists_the_layers():
    for name in MODULES:
        _layer(name)
    doc = emvsbayes.__doc__
    for prefixes in LAYERS:
        for prefix in prefixes:
            if prefix != "emvsbayes":
                assert f"``{prefix}``" in doc, f"the package docstring's layers do not list {prefix}"


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_arrow_from_a_lower_layer_to_a_higher_one():
    upward = sorted((a, b) for a, targets in _graph().items() for b in targets
                    if _layer(b) > _layer(a) and (a, b) not in UPWARD_ALLOWED)
    assert upward == []


FAMILY_NAME = re.compile(r"""==\s*["'](coins|gaussian|poisson|hmm)["']|["'](coins|gaussian|poisson|hmm)["']\s*==|!=\s*["'](coins|gaussian|poisson|hmm)["']""")


def test_generic_modules_name_no_family():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith(("emvsbayes.coins", "emvsbayes.gaussian", "emvsbayes.poisson", "emvsbayes.hmm")) or name == "emvsbayes.family":
            continue
        if name in NAMES_FAMILIES_ALLOWED or f"{name}.__init__" in NAMES_FAMILIES_ALLOWED:
            continue
        imported = [t for t, _, _ in _imports(name) if t.startswith(("emvsbayes.coins", "emvsbayes.gaussian", "emvsbayes.poisson", "emvsbayes.hmm"))]
        text = path.read_text(encoding="utf-8")
        if imported or FAMILY_NAME.search(text) or re.search(r"""\{\s*["'](coins|gaussian|poisson|hmm)["']\s*:""", text):
            offenders.append(name)
    assert offenders == []


def test_no_private_names_imported_across_modules():
    found = sorted((name, imported) for name in MODULES for _, imported, _ in _imports(name)
                   if imported and imported.startswith("_") and not imported.startswith("__")
                   and (name, imported) not in PRIVATE_ALLOWED)
    assert found == []
