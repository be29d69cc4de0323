"""The project's own capture crafting scripts (scapy). Each module writes captures into pcaps/."""
