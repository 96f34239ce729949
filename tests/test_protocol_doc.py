"""PROTOCOL.md says what the code does: its table of settings defaults is the Settings class's."""

import json
import re
from pathlib import Path

from brushwork.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "PROTOCOL.md"


def _documented_defaults() -> dict[str, str]:
    text = DOC.read_text()
    table = text[
        text.index("<!-- settings-defaults: start -->") : text.index(
            "<!-- settings-defaults: end -->"
        )
    ]
    return dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, re.MULTILINE))


def test_protocol_md_lists_every_setting_with_the_codes_default():
    expected = {name: json.dumps(value) for name, value in Settings().to_dict().items()}
    documented = _documented_defaults()
    assert list(documented) == list(expected), "fields missing, extra or out of order"
    wrong = {k: (documented[k], v) for k, v in expected.items() if documented[k] != v}
    assert not wrong, f"PROTOCOL.md defaults differ from Settings (doc, code): {wrong}"
