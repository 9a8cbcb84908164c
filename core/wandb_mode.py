"""The one rule for W&B's mode, shared by every stage that logs (train, evaluate, analysis)."""

from __future__ import annotations

import functools
import logging
import netrc
import os
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


def resolve(mode: str = "auto") -> str:
    """``logger.mode`` → a ``wandb.init`` mode. ``WANDB_MODE`` in the environment wins; ``auto`` is online
    when an API key is configured (``WANDB_API_KEY``, or a ``wandb login`` entry in ~/.netrc) and the W&B
    server answers, else offline, so a run without credentials or without network never fails or blocks
    (``wandb.init`` online waits ``init_timeout`` and then raises)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode != "auto":
        return mode
    if not (os.environ.get("WANDB_API_KEY") or _logged_in()):
        return "offline"
    return "online" if reachable(base_url()) else "offline"


def base_url() -> str:
    """The W&B server this process would talk to: ``WANDB_BASE_URL``, else wandb's own default."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    import wandb

    return wandb.Settings().base_url


@functools.cache
def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers one HTTP request within ``timeout`` seconds (any status counts; proxies in the
    environment are honoured). Cached per process, so the warning is said once."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:  # any status counts: the server answered
        return True
    except (urllib.error.URLError, OSError) as e:
        log.warning("W&B: an API key is configured but %s does not answer (%s: %s); logging offline. "
                    "Upload later with `wandb sync <run dir>`, or set logger.mode=online to insist.",
                    url, type(e).__name__, e)
        return False


def _logged_in() -> bool:
    hosts = {"api.wandb.ai", urlsplit(base_url()).hostname}
    try:
        auth = netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any(auth.authenticators(h) is not None for h in hosts if h)
