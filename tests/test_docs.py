"""The generated reference pages are current (regenerate them as each page says)."""

from pathlib import Path

from jaxmarket.study import reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_study_file_reference_is_current():
    assert (DOCS / "study-file.md").read_text() == reference.document()


def test_every_solver_key_has_a_unit_and_a_description():
    from jaxmarket.study.keys import SCHEMA

    for section, keys in SCHEMA.items():
        for key, entry in keys.items():
            assert entry.unit and entry.description, f"{section}.{key}"
