"""The rule engine: YAML rules (Sigma-shaped) compiled once and run over IcsEvents.

Public names::

    load_rules(paths, lists) -> RuleSet          # parse + validate, problems collected, never raises
    load_text(text, path) -> (rules, problems)
    NamedLists.from_config(lists, lists_file)    # allowed_masters, engineering_workstations, ...
    RuleEngine.from_config(rules_config)         # the Detector (observe / tick / flush)
    Problem                                      # "path:line: rule id: message"

Modules: ``yamlpos`` (YAML with line numbers), ``fields`` (the field table), ``condition`` (the
condition grammar), ``schema`` (typed rules + validation), ``lists`` (named lists, CIDR matching),
``compiler`` (rule -> generated match function), ``state`` (threshold / first-seen / suppression),
``loader`` (files and folders), ``engine`` (RuleEngine), ``attack`` (the ATT&CK for ICS catalogue).
"""

from detectors.rules.engine import EngineSettings, RuleEngine
from detectors.rules.lists import ListError, NamedLists
from detectors.rules.loader import RuleSet, load_rules, load_text
from detectors.rules.schema import Problem, Rule

__all__ = [
    "EngineSettings",
    "ListError",
    "NamedLists",
    "Problem",
    "Rule",
    "RuleEngine",
    "RuleSet",
    "load_rules",
    "load_text",
]
