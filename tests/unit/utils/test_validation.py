"""Generation id checks (utils/validation.py): the ASCII fast path gives the per-character rule's verdict."""

from __future__ import annotations

import unicodedata

import pytest

from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.utils.validation import check_generation_id, id_problem

#: Non-ASCII characters on either side of the rule: separators, format characters, letters.
NON_ASCII = "\u00a0\u0085\u1680\u200b\u200d\u2028\u2029\u202e\u3000\ufeff\u00e9\u732b\U0001f3ac"


def _refused_by_rule(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


@pytest.mark.parametrize(
    "ch", [chr(c) for c in range(128)] + list(NON_ASCII), ids=lambda ch: f"U+{ord(ch):04X}"
)
def test_each_character_inside_an_id_is_judged_by_the_rule(ch: str) -> None:
    value = f"a4b8ea5d-d283:kling-video/v1{ch}/standard"
    problem = id_problem(value)
    if _refused_by_rule(ch):
        assert problem is not None
        assert "spaces or control characters" in problem
        with pytest.raises(KlingValidationError, match="generation_id"):
            check_generation_id(value)
    else:
        assert problem is None
        assert check_generation_id(value) == value
