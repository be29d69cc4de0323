"""What ``create_app`` needs: the whole icswatch ``Config`` (the ``api`` section, the alert store in
``outputs.sqlite``, the rules, the linkage and the sensor's name) plus the paths it resolves.

The API reads the same configuration file as the sensor, so both agree on where the alerts are and
which rules run. ``icswatch serve`` passes it to the worker processes as JSON in the environment
variable ``ICSWATCH_API_SETTINGS`` (uvicorn starts each worker from an import string, not an object).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icswatch.config import ApiConfig, Config

ENV = "ICSWATCH_API_SETTINGS"


@dataclass
class EnterpriseSettings:
    config: Config

    @classmethod
    def from_config(cls, config: Config | None = None, *, db: str | None = None, **api: Any) -> EnterpriseSettings:
        """Settings from a ``Config`` (defaults without one); ``db`` replaces ``outputs.sqlite``, and any
        ``api`` key given here replaces the file's."""
        cfg = (config or Config()).model_copy(deep=True)
        if db:
            cfg.outputs.sqlite = db
        if api:
            data = cfg.api.model_dump()
            data.update({k: v for k, v in api.items() if v is not None})
            cfg.api = ApiConfig.model_validate(data)
        return cls(cfg)

    @property
    def api(self) -> ApiConfig:
        return self.config.api

    @property
    def db(self) -> str:
        return self.config.outputs.sqlite or "var/icswatch.db"

    @property
    def state_db(self) -> str:
        return self.api.state_db

    @property
    def upload_dir(self) -> Path:
        return Path(self.api.upload_dir)

    def to_json(self) -> str:
        return self.config.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> EnterpriseSettings:
        return cls(Config.model_validate(json.loads(text)))

    @classmethod
    def from_env(cls) -> EnterpriseSettings:
        raw = os.environ.get(ENV)
        if not raw:
            from icswatch.config import load_config

            return cls(load_config(None))
        return cls.from_json(raw)
