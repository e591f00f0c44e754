"""The version of bavos (read by the build, reported in summaries and checkpoints)."""

__version__ = "0.2.0"
