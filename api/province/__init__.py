"""The provincial platform: enterprises report incidents up (signed, idempotent), the province sends
advisories down and watches the region. Start it with ``icswatch province serve``; see docs/linkage.md
and docs/province-dashboard.md."""

from api.province.app import create_app
from api.province.settings import ProvinceSettings

__all__ = ["ProvinceSettings", "create_app"]
