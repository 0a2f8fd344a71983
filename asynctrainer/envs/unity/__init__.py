"""Unity environments: ML-Agents' communicator protocol (our ``.proto`` files and their generated code)."""
