"""deepfleet: from raw data to a served model, on one CPU or many GPUs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
