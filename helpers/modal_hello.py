"""The smallest Modal app: one function that says where it ran. Notebook 03 starts from it.

    modal run -m helpers.modal_hello --name learner     # prints one local and one remote greeting

``hello.local(...)`` runs the function body right here; ``hello.remote(...)`` ships the call
to a container in Modal's cloud and brings the result back — the same Python, two places.
It needs no GPU, no volume and no secret: a remote call costs a fraction of a cent.
"""

from __future__ import annotations

import platform

import modal

from helpers import config

app = modal.App(config.MODAL_HELLO_APP)


@app.function(image=modal.Image.debian_slim(python_version="3.11"), timeout=60)
def hello(name: str) -> str:
    """Say hello from wherever this runs (your machine, or a Modal container)."""
    return f"Hello, {name}, from {platform.node() or 'a machine'} ({platform.system()} {platform.machine()})"


@app.local_entrypoint()
def main(name: str = "learner") -> None:
    """What ``modal run`` calls on your machine: the same function, once here and once in the cloud."""
    print("local :", hello.local(name))
    print("remote:", hello.remote(name))


def source() -> str:
    """The app and function definitions above, as text (for the notebook to show)."""
    from pathlib import Path

    text = Path(__file__).read_text()
    return text[text.index("app = modal.App"):text.index("@app.local_entrypoint")].strip()
