"""The exceptions the course raises on purpose.

Each one carries a message that names the problem *and* the fix, so a learner never has to
read a traceback from deep inside subprocess or huggingface_hub to know what to do. They
subclass the built-in exception a caller would naturally catch (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so generic handlers keep working.
"""

from __future__ import annotations


class CourseError(Exception):
    """Base class for every error raised deliberately by ``helpers``."""


class BuildError(CourseError, RuntimeError):
    """Fetching or compiling llama.cpp failed."""


class ModelFileNotFoundError(CourseError, FileNotFoundError):
    """A GGUF file that was asked for does not exist."""


class QuantNotFoundError(CourseError, ValueError):
    """A repository has no GGUF file for the requested quantization."""


class LlamaProcessError(CourseError, RuntimeError):
    """A llama.cpp process exited with an error; the message ends with its log tail."""

    def __init__(self, message: str, returncode: int | None = None, log_tail: str = ""):
        super().__init__(message + (f"\n--- last lines of its log ---\n{log_tail}" if log_tail else ""))
        self.returncode = returncode
        self.log_tail = log_tail


class ServerStartError(LlamaProcessError):
    """llama-server died or did not become healthy in time."""


class PortInUseError(CourseError, OSError):
    """The port asked for is already taken by another process."""
