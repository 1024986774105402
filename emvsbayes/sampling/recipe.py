"""A PyMC model named by what it is built from, so its compiled sampler can be found without building it.

A :class:`ModelRecipe` is a model-building function and its arguments. Its :attr:`~ModelRecipe.key`
digests everything the built model (and so the sampler compiled from it) depends on: the function's
name, the arguments (arrays by dtype, shape and bytes; frozen records field by field), the source of
every emvsbayes module, and the versions of the libraries that turn the model into a JAX program.
Two recipes with the same key build the same program, so a later process can load that program
(:mod:`emvsbayes.sampling.programs`) instead of importing PyMC, building the model and tracing it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Libraries whose versions decide the program built from a model.
PROGRAM_LIBRARIES = ("pymc", "pytensor", "numpyro", "jax", "jaxlib", "numpy")


class NotHashable(TypeError):
    """An argument of a recipe has no content digest (the recipe is then built every time)."""


def _update(digest, value: Any) -> None:
    """Feed ``value`` into ``digest`` with its type, so that 1, 1.0, "1" and (1,) all differ."""
    if value is None or isinstance(value, bool | int | float | complex | str):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, np.ndarray | np.generic):
        array = np.ascontiguousarray(value)
        if array.dtype.hasobject:
            raise NotHashable("an object array has no content digest")
        digest.update(f"ndarray:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    elif isinstance(value, tuple | list):
        digest.update(f"{type(value).__name__}:{len(value)}[".encode())
        for item in value:
            _update(digest, item)
        digest.update(b"]")
    elif isinstance(value, Mapping):
        digest.update(f"mapping:{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            _update(digest, key)
            _update(digest, value[key])
        digest.update(b"}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        digest.update(f"record:{cls.__module__}.{cls.__qualname__}(".encode())
        for field in dataclasses.fields(value):
            digest.update(f"{field.name}=".encode())
            _update(digest, getattr(value, field.name))
        digest.update(b")")
    else:
        raise NotHashable(f"no content digest for a {type(value).__name__}")


@functools.cache
def code_version() -> str:
    """Digest of every emvsbayes source file: a change anywhere in the package makes new programs."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def library_versions() -> tuple[tuple[str, str], ...]:
    versions = []
    for name in PROGRAM_LIBRARIES:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, "absent"))
    return tuple(versions)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelRecipe:
    """``build(*args, **kwargs)`` -> ``pymc.Model``, built at most once, on first use of :meth:`model`.

    ``build`` must be a module-level function whose result depends only on its arguments (and on
    emvsbayes's code and library versions, which the key includes).
    """

    build: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def model(self):
        """The PyMC model (built on the first call)."""
        try:
            return self.__dict__["_model"]
        except KeyError:
            model = self.build(*self.args, **self.kwargs)
            object.__setattr__(self, "_model", model)
            return model

    @functools.cached_property
    def key(self) -> str | None:
        """Hex digest naming the model, or ``None`` when an argument cannot be digested."""
        digest = hashlib.sha256(b"emvsbayes model recipe 1;")
        digest.update(f"{self.build.__module__}.{self.build.__qualname__};".encode())
        try:
            _update(digest, tuple(self.args))
            _update(digest, dict(self.kwargs))
        except NotHashable:
            return None
        digest.update(code_version().encode())
        _update(digest, library_versions())
        return digest.hexdigest()


def as_recipe(model_or_recipe) -> ModelRecipe:
    """A recipe for a recipe or an already built ``pymc.Model`` (which then has no key)."""
    if isinstance(model_or_recipe, ModelRecipe):
        return model_or_recipe
    recipe = ModelRecipe(_built, (model_or_recipe,))
    object.__setattr__(recipe, "_model", model_or_recipe)
    object.__setattr__(recipe, "key", None)
    return recipe


def _built(model):
    return model
