"""``python -m notify_svc.catalogue``: writes ``docs/webhooks/asyncapi.json`` and refreshes the generated sections of
``docs/webhooks/README.md`` (the event table, the request example). Both are committed, so that a change of a
public event shows up in review; the tests fail while they are stale."""

from __future__ import annotations

from pathlib import Path

from notify_svc.catalogue.asyncapi import asyncapi_json, render_readme

# services/notify-svc/src/notify_svc/catalogue/__main__.py -> the repository root
DOCS = Path(__file__).resolve().parents[5] / "docs" / "webhooks"


def main(docs: Path = DOCS) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "asyncapi.json").write_text(asyncapi_json(), encoding="utf-8")
    readme = docs / "README.md"
    readme.write_text(render_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {docs / 'asyncapi.json'} and {readme}")


if __name__ == "__main__":
    main()
