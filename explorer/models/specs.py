"""A model's ModelSpec by any name a user gives: a catalog name, a runnable model (the registry), or the path of
a config.json. It lives here, above the cost maths, because only this layer knows the registry: explorer.costs
reads configs and never imports what runs them (the layering .importlinter checks)."""

from __future__ import annotations

from .. import settings
from ..costs.specs import ModelSpec, catalog_names, catalog_or_config, spec_from_dict
from ..errors import ExplorerError
from . import registry


def resolve(name: str) -> ModelSpec:
    """A catalog name, a runnable model's name, or the path of a config.json (or its folder)."""
    name = (name or "").strip()
    if name in catalog_names():
        return catalog_or_config(name)
    known = registry.registry()
    if name in known:
        config = registry.read_config(known[name])
        if config is None:
            raise ExplorerError(f"'{name}' is not provisioned yet: run `python -m explorer provision`.")
        return spec_from_dict(config, name, "runnable")
    if settings.model_sources() != "any":  # a hosted server reads no config.json path a user names
        registry.resolve(name)  # raises the server's policy message unless the folder is allowed
    spec = catalog_or_config(name)
    if spec is None:
        raise ExplorerError(f"Unknown model '{name}'. Use a catalog name ({', '.join(catalog_names())}), "
                            "a runnable model, or the path of a config.json.")
    return spec
