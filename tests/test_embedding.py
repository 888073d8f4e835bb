"""Reports copied into documents between markers (experiments/reporting/embedding.py)."""

from __future__ import annotations

from pathlib import Path

from experiments.reporting.embedding import embed, heading_level, nested_headings

REPORT = """# search_evp

Every trial ...

| n | gru |
|---|---|
| 1 | 36.95 |

## gru: the trials

```bash
# a comment in a code block, not a heading
```

### a note under it
"""


def test_a_report_is_nested_under_the_section_that_holds_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n```bash\n# a shell comment\n```\n\n## A fair fight\n\nprose\n\n"
                   "<!-- table:search_evp -->\nSTALE\n<!-- /table:search_evp -->\n\n## Next section\n")
    embed(doc, "search_evp", REPORT)
    text = doc.read_text()
    assert "STALE" not in text and "# search_evp" not in text  # the report's own title is left out
    assert "\n### gru: the trials\n" in text and "\n#### a note under it\n" in text
    assert "\n# a comment in a code block, not a heading\n" in text  # fenced lines are left as they are
    assert text.startswith("# Results\n\n```bash\n# a shell comment\n```\n\n## A fair fight\n\nprose\n\n")
    assert text.endswith("<!-- /table:search_evp -->\n\n## Next section\n")
    embed(doc, "search_evp", REPORT)
    assert doc.read_text() == text  # embedding again changes nothing


def test_headings_already_deep_enough_stay_and_none_move_up() -> None:
    assert nested_headings("text\n\n#### Targets\n", 2) == "text\n\n#### Targets\n"
    assert nested_headings("## Targets\n", 0) == "## Targets\n"
    assert nested_headings("## a\n### b\n", 3) == "#### a\n##### b\n"
    assert heading_level("# Title\n\n```\n## not a heading\n```\n") == 1
    assert heading_level("no heading") == 0


def test_a_document_without_the_markers_is_left_as_it_is(tmp_path: Path, capsys) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# Title\n")
    embed(doc, "search_evp", REPORT)
    assert doc.read_text() == "# Title\n"
    assert "has no <!-- table:search_evp --> ... <!-- /table:search_evp --> markers" in capsys.readouterr().out
