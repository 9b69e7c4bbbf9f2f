"""Configuration reference as Markdown: the `CollectorConfig` model in, a table per section out.

`docs/configuration.md` is generated from this (`python -m collector.config_docs`), and a test
keeps the file equal to the output, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from pydantic import BaseModel

from collector.config import ENV_PREFIX, CollectorConfig

HEADER = """# Collector configuration

The collector reads, in increasing priority: built-in defaults, the YAML file given with
`--config`, environment variables `INFERSIGHT_<SECTION>_<KEY>`, and command-line flags. An
unknown key or a value of the wrong type stops the collector at start with a message naming the
key. `infersight collector --print-config` prints the effective configuration.

Example file:

```yaml
server:
  host: 0.0.0.0
  otlp_http_port: 4318
store:
  db: /var/lib/infersight/infersight.duckdb
otlp:
  bearer_token: change-me
```
"""


def render() -> str:
    """The whole reference page."""
    out = [HEADER]
    for section, field in CollectorConfig.model_fields.items():
        model = field.default_factory() if field.default_factory else None  # type: ignore[call-arg]
        if not isinstance(model, BaseModel):
            continue
        doc = (type(model).__doc__ or "").strip()
        out.append(f"\n## `{section}`\n\n{doc}\n")
        out.append("| key | default | environment variable | description |")
        out.append("|---|---|---|---|")
        for key, sub in type(model).model_fields.items():
            env = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            default = getattr(model, key)
            shown = "(none)" if default is None else f"`{default}`"
            out.append(f"| `{key}` | {shown} | `{env}` | {sub.description or ''} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
