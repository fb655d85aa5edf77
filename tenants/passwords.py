"""The password rule: long enough, not a known common password, not easy to guess.

The common-password list is the 30,000 most frequent passwords from real leaks that ships with
``zxcvbn`` (``frequency_lists["passwords"]``); nothing is downloaded at run time. Only ~230 of
them are 12+ characters long, so the length rule alone lets most of them out; zxcvbn's estimator
(which matches against the same list with l33t substitutions, repeats, keyboard walks, dates and
the user's own email and name) catches the long variants such as ``password1234``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "password_problem"]

MIN_LENGTH = 12
MAX_LENGTH = 128
# zxcvbn refuses input longer than 72 characters; a 72-character prefix that is hard to guess is enough.
_ESTIMATE_PREFIX = 72
# zxcvbn scores 0..4; 3 means "safely unguessable: moderate protection from offline slow-hash attacks".
_MIN_SCORE = 3


@cache
def _common() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, user_inputs: Iterable[str] = ()) -> str | None:
    """What is wrong with ``password`` in words for the form, or ``None`` when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if password.lower() in _common():
        return "This password is on a list of common passwords. Choose another."
    inputs = [s for s in user_inputs if s]
    if zxcvbn(password[:_ESTIMATE_PREFIX], user_inputs=inputs)["score"] < _MIN_SCORE:
        return "This password is too easy to guess (a common word, pattern or your own name or email). " \
               "A few unrelated words make a strong one."
    return None
