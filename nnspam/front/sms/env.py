"""Secrets of the SMS front: from the environment, else from the ``.env`` file.

``TWILIO_AUTH_TOKEN`` and ``TWILIO_ACCOUNT_SID`` (the webhook and the poller) and
``NNSPAM_SECRET_KEY`` (the dashboard's session key) never come from the config file:
from the environment, else from the file that ``sms.env_file`` names. Standard
library only; the webhook, the dashboard and the command line share it, so none of
them imports another for it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_env_file", "twilio_secret"]


def read_env_file(path: str | os.PathLike | None) -> dict[str, str]:
    """``NAME=value`` lines of a ``.env`` file (``#`` comments, optional
    ``export`` and quotes); {} when there is no such file."""
    if not path:
        return {}
    p = Path(os.path.expanduser(str(path)))
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def twilio_secret(name: str, env_file: str | os.PathLike | None) -> str | None:
    """A Twilio setting from the environment, else from the ``.env`` file."""
    return os.environ.get(name) or read_env_file(env_file).get(name) or None
