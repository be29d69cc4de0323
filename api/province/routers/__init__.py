"""One router per resource (STYLE.md): each module exports ``router``."""
