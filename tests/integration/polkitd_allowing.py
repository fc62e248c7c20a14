"""python-dbusmock template: its polkitd, allowing the actions named in its parameters.

The bus starts it by activation, so nobody can call SetAllowed before the first
CheckAuthorization: ``-p '{"allowed": ["org.vfiod1.manage"]}'`` says it up front.
"""

from __future__ import annotations

from typing import Any

from dbusmock.templates.polkitd import *  # noqa: F403 (the template's methods and names)
from dbusmock.templates.polkitd import load as _load_polkitd


def load(mock: Any, parameters: dict[str, Any]) -> None:
    """The stock template, then the allowed actions from *parameters*."""
    _load_polkitd(mock, parameters)
    mock.allowed = list(parameters.get("allowed", []))
