"""Hostile captures for the hardening suite (issue #11): floods and lies aimed at the sensor itself.

``tools.hostile.scenarios`` writes each capture (one function per scenario, a size parameter, real
ICS traffic mixed in from ``tools.hostile.victims``); ``tools.hostile.wire`` builds the frames with
``struct``. Run ``python -m tools.hostile --help``. What each scenario is and what the sensor does
with it: ``docs/hostile-traffic.md``.
"""
