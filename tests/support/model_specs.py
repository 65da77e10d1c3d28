"""One way for tests to build a ModelSpec: the schema's defaults, with what a test cares about changed."""

from __future__ import annotations

from aiosd.config.settings import ModelDefaults, ModelSpec

# The values models.defaults has when the config file says nothing.
DEFAULTS = ModelDefaults(
    tools="prompt",
    on_text_dropped="retry_without_tools",
    context_window=200000,
    max_tokens=8192,
    input=("text",),
    reasoning=False,
)


def model_spec(model_id: str, **overrides) -> ModelSpec:
    fields = dict(
        DEFAULTS.traits(),
        id=model_id,
        kernel_model=model_id,
        backend=None,
        name=f"{model_id} (via AIOS)",
        source="map",
    )
    fields.update(overrides)
    return ModelSpec(**fields)
