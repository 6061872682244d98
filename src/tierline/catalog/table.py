"""Print the built-in catalog as a Markdown table (used to generate docs/catalog.md).

Run: ``python -m tierline.catalog.table [path/to/catalog.yaml]``
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tierline.catalog.model import Deployment, ProviderSpec

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")


def load(path: Path = CATALOG_PATH) -> tuple[dict[str, ProviderSpec], list[Deployment], str]:
    """Load and validate a catalog file: providers by name, deployments, and its date."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    providers = {
        name: ProviderSpec(name=name, **(spec or {}))
        for name, spec in (raw.get("providers") or {}).items()
    }
    deployments = [Deployment(**d) for d in raw.get("deployments") or []]
    return providers, deployments, str(raw.get("date", ""))


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:g}"


def _context(tokens: int) -> str:
    if tokens >= 1_000_000 and tokens % 1_000_000 < 100_000:
        return f"{tokens / 1_000_000:g}M" if tokens % 1_000_000 == 0 else f"{tokens:,}"
    return f"{tokens:,}"


def render(providers: dict[str, ProviderSpec], deployments: list[Deployment]) -> str:
    """The Markdown table of deployments."""
    lines = [
        "| name | provider | $ in / cached / out per 1M | context | tier | open-weight | region |",
        "| --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for d in deployments:
        spec = providers.get(d.provider)
        region = d.region or (spec.region if spec else None) or "–"
        p = d.price
        price = f"{_money(p.input)} / {_money(p.cached_input)} / {_money(p.output)}"
        # an embedded model's window is what one request gets (n_ctx), as /v1/models says
        window = (d.as_embedded() if spec and spec.wire == "embedded" else d).context_window
        lines.append(
            f"| `{d.name}` | {d.provider} | {price} | {_context(window)} "
            f"| {d.tier or '–'} | {'yes' if d.open_weight else 'no'} | {region} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else CATALOG_PATH
    providers, deployments, date = load(path)
    print(f"Prices as of {date} (USD per 1M tokens).\n")
    print(render(providers, deployments))


if __name__ == "__main__":
    main()
