"""``python -m gateway``: the HTTP gateway in the foreground (settings from the environment)."""

from __future__ import annotations

import sys

from gateway.app import main

if __name__ == "__main__":
    sys.exit(main())
