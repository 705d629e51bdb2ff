"""The import rules of docs/architecture.md, read from the code with `ast`: imports point down
the layers (or stay within one), the simulator keeps to itself, and each library has its one
home. Imports under `if TYPE_CHECKING:` count for layers (a name is a dependency) but not
for library homes (a type annotation loads nothing)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROXY = Path(__file__).resolve().parents[2] / "proxy"

# docs/architecture.md, "Modules and layers": lowest first. A module or package prefix.
# fmt: off
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("settings",),
    ("telemetry",),
    ("learning", "upstream"),
    ("routing", "clients"),
    ("serving", "probing", "method"),
    ("api",),
    ("app", "server"),
    ("cli", "demo", "method.cli"),
)
# fmt: on

# library -> the modules or packages that may import it at run time.
HOMES: dict[str, tuple[str, ...]] = {
    "aiohttp": ("upstream", "simulator", "demo"),
    "redis": ("learning.store.redis_store",),
    "litellm": ("upstream.litellm_adapter",),
    "rich": ("method.cli", "method.report", "method.progress"),
    "numpy": ("learning.stats", "learning.prefill", "simulator"),
    "matplotlib": ("method.plots",),
    "fastapi": ("api", "app"),
    "uvicorn": ("server", "demo"),
    "prometheus_client": ("telemetry.metrics", "api.health"),
    "opentelemetry": ("telemetry.otel",),
}
# Imported inside a function only, so that importing the module does not load it (otel.py
# itself is imported only when telemetry is enabled: tests/unit/test_imports.py).
LAZY = ("litellm", "matplotlib")


@dataclass(frozen=True)
class Import:
    module: str  # "proxy.x.y" or a library's dotted name
    line: int
    typing_only: bool
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(PROXY).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    yield from _walk(tree, typing_only=False, in_function=False)


def _walk(node: ast.AST, *, typing_only: bool, in_function: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(alias.name, child.lineno, typing_only, in_function)
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            if child.module == "proxy":  # `from proxy import requestid`
                for alias in child.names:
                    yield Import(f"proxy.{alias.name}", child.lineno, typing_only, in_function)
            else:
                yield Import(child.module, child.lineno, typing_only, in_function)
        else:
            yield from _walk(
                child,
                typing_only=typing_only or _is_type_checking(child),
                in_function=in_function
                or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
            )


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix naming `module` (method.cli sits above method)."""
    best: tuple[int, int] | None = None
    for level, members in enumerate(LAYERS):
        for prefix in members:
            if matches(module, prefix) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    return None if best is None else best[0]


def sources() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PROXY.rglob("*.py"))


def test_every_module_has_a_layer_or_is_the_simulator() -> None:
    unplaced = [m for m, _ in sources()
                if m and layer_of(m) is None and not matches(m, "simulator")]  # fmt: skip
    assert unplaced == [], f"add these to LAYERS and docs/architecture.md: {unplaced}"


# The top of the package: one subpackage per layer's part, and the process's entry points.
TOP_MODULES = {"__init__", "app", "server", "cli", "demo"}


def test_the_tree_shows_the_layers() -> None:
    """`ls proxy` reads like docs/architecture.md: packages, and only the entry points flat."""
    flat = {p.stem for p in PROXY.glob("*.py")} - TOP_MODULES
    packages = {p.name for p in PROXY.iterdir() if (p / "__init__.py").exists()}
    layered = {prefix.split(".")[0] for members in LAYERS for prefix in members}
    assert flat == set(), f"modules at the top of proxy/: {sorted(flat)}"
    assert packages - layered == {"simulator"}, packages - layered


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, path in sources():
        own = layer_of(module)
        if own is None:
            continue
        for imp in imports(path):
            if not imp.module.startswith("proxy."):
                continue
            target = imp.module.removeprefix("proxy.")
            level = layer_of(target)
            if level is not None and level > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {level}) "
                              f"at line {imp.line}")  # fmt: skip
    assert upward == []


def test_the_simulator_imports_nothing_of_the_proxy_and_only_the_demo_imports_it() -> None:
    crossing = []
    for module, path in sources():
        for imp in imports(path):
            target = imp.module.removeprefix("proxy.")
            if not imp.module.startswith("proxy."):
                continue
            inside = matches(module, "simulator")
            if inside and not matches(target, "simulator"):
                crossing.append(f"{module} imports {target}")
            if not inside and matches(target, "simulator") and module != "demo":
                crossing.append(f"{module} imports {target}")
    assert crossing == []


def test_each_library_is_imported_in_its_home_only() -> None:
    strays = []
    for module, path in sources():
        for imp in imports(path):
            library = imp.module.split(".")[0]
            if library not in HOMES or imp.typing_only:
                continue
            if not any(matches(module, home) for home in HOMES[library]):
                strays.append(f"{module} imports {imp.module} at line {imp.line}")
            elif library in LAZY and not imp.in_function:
                strays.append(f"{module} imports {imp.module} at module level (line {imp.line})")
    assert strays == []


def test_the_checker_sees_what_it_is_meant_to() -> None:
    """The walk finds function-level and TYPE_CHECKING imports (else the tests pass vacuously)."""
    found = {i.module: i for i in imports(PROXY / "upstream" / "litellm_adapter.py")}
    assert found["litellm"].in_function and not found["litellm"].typing_only
    health = {i.module: i for i in imports(PROXY / "api" / "health.py")}
    assert health["proxy.learning.scoreboard"].typing_only
    assert layer_of("method.cli") == len(LAYERS) - 1 and layer_of("method.job") == 5


def test_only_the_litellm_adapter_writes_the_environment() -> None:
    """The proxy passes settings as arguments; litellm alone reads one from os.environ
    (LITELLM_LOCAL_MODEL_COST_MAP), set just before it is imported."""
    writes = []
    for module, path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _writes_environ(node) and module != "upstream.litellm_adapter":
                writes.append(f"{module} line {node.lineno}")  # type: ignore[attr-defined]
    assert writes == []


def _writes_environ(node: ast.AST) -> bool:
    def is_environ(target: ast.AST) -> bool:
        return isinstance(target, ast.Attribute) and target.attr == "environ"

    if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = node.func
        if func.attr in ("setdefault", "update", "pop", "clear") and is_environ(func.value):
            return True
        return func.attr in ("putenv", "unsetenv")
    return False
