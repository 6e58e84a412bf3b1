from typing import Any

from pydantic import Field

from deepfleet.config._base import Section


class ModelSection(Section):
    """[model]: a zoo name (mlp, cnn, resnet) or a user's `module.path:factory`."""

    name: str = Field("mlp", min_length=1, description="Zoo name or module.path:factory.")
    path: str | None = Field(
        None, description="Folder searched first for a user's module; the job file's by default."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the model factory."
    )
