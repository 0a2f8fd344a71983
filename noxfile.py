"""Sessions: lint (ruff + mypy), tests (everything but learning), learning (SimpleEnvironment bars).

Run them in the current environment with ``nox --no-venv -s lint tests learning`` or let nox
make its own venvs with ``nox``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests", "learning"]
nox.options.reuse_existing_virtualenvs = True
DEPS = ".[cpu,export,ray,pettingzoo,dev]"


def install(session: nox.Session) -> None:
    """Install the project, unless run with --no-venv in an environment that already has it (CI)."""
    if session.venv_backend != "none":
        session.install("-e", DEPS)


@nox.session
def lint(session: nox.Session) -> None:
    install(session)
    session.run("ruff", "check", "asynctrainer", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "asynctrainer", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    install(session)
    session.run("pytest", "-m", "not learning", *session.posargs)


@nox.session
def learning(session: nox.Session) -> None:
    install(session)
    session.run("pytest", "-m", "learning", *session.posargs)


@nox.session
def protos(session: nox.Session) -> None:
    """Regenerate the Unity protocol's Python code from its .proto files (a venv of its own)."""
    # protoc 5.27 (grpcio-tools 1.66.2): code that runs on protobuf 5.27 up to 7.x.
    session.install("grpcio-tools==1.66.2")
    session.run("python", "tools/generate_protos.py")
