"""The default detection rules (the YAML files here) and named lists (``lists/``).

Not code: this file only makes the folder the data package ``icswatch_rules`` of a built wheel
(pyproject.toml maps the name to ``rules/``), so ``icswatch.config.default_rules_dir()`` finds the
rules with importlib.resources whether icswatch runs from a checkout or from an installed wheel.
The rule loader reads only ``*.yaml`` / ``*.yml`` files.
"""
