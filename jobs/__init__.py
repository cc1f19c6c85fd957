"""pushtune pipeline steps: one module per step, the CLI is a thin shell over them."""

__version__ = "0.1.0"
