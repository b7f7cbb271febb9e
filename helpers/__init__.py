"""helpers — everything the *llama.cpp on Modal* notebooks call.

The notebooks stay thin; the logic lives here, in small modules named for what they
do (see README.md for the map). Importing this package never needs Modal credentials,
network access or a built llama.cpp: those are only touched when a function needs them.
"""

from helpers.config import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION

__all__ = ["LLAMA_CPP_COMMIT", "LLAMA_CPP_PYTHON_VERSION"]
