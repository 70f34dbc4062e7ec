"""Model families, one file each. Importing this package registers them all.

Every module in this package is imported here, so adding a family is adding a
file: it registers its variants with `zoo.registry.register_model` at import.
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
