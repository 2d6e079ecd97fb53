"""Name -> class registries (an allowlist): how YAML and CLI names become components.

Loading a pipeline never imports an arbitrary path from YAML: every node type, router, aggregator
and backend must be registered here by name, by the package itself or by a third party through an
entry point group (``expertmix.routers``, ``expertmix.aggregators``, ``expertmix.backends``,
``expertmix.nodes``).

Example::

    >>> from orchestrator.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... class Square: ...
    >>> shapes.get("square").__name__
    'Square'
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from orchestrator.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named allowlist of classes (or factories) of one kind."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._group = entry_point_group
        self._items: dict[str, T] = {}
        self._loaded_entry_points = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self._items[name] = obj

    def get(self, name: str, *, where: str = "") -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items), where=where) from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._items

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points or not self._group:
            return
        self._loaded_entry_points = True
        for ep in entry_points(group=self._group):
            self._items.setdefault(ep.name, ep.load())
