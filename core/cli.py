"""How every stage's ``python -m <stage>`` reports a bad input: one line naming it and the fix, exit status 1.

The stages check their inputs before doing anything expensive and raise an exception whose message names
the input and the fix; a traceback under it only hides that line. ``HYDRA_FULL_ERROR=1`` (Hydra's own
switch) brings the traceback back for debugging. ``KeyError`` and ``IndexError`` are bugs, never a stage's
report of bad input (their message is a bare key): they keep their traceback even when a listed kind, such
as ``LookupError``, covers them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_line_errors(stage: str, *kinds: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except kinds as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or isinstance(e, (KeyError, IndexError)):
            raise
        raise SystemExit(f"{stage}: {e}") from None
