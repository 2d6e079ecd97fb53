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
from typing import Any, Callable, Generic, TypeVar

from orchestrator.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named allowlist of classes (or factories) of one kind.

    Entry points are listed on first use and each is imported only when its name is asked for,
    so looking up one router never imports the others (or their heavy dependencies).
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, Any] | None = None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self._items[name] = obj

    def get(self, name: str, *, where: str = "") -> T:
        if name not in self._items:
            ep = self._listed().get(name)
            if ep is None:
                raise UnknownNameError(self.kind, name, self.names(), where=where)
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in: name it and its target
                raise ConfigError(f"{self.kind} {name!r} ({self._group} entry point {ep.value}) failed to load: "
                                  f"{type(exc).__name__}: {exc}",
                                  hint="reinstall the package that provides it (`scripts/setup.sh` for built-ins)") from exc
            self._items.setdefault(name, obj)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._listed()))

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._listed()

    def _listed(self) -> dict[str, Any]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=self._group)} if self._group else {}
        return self._entry_points
