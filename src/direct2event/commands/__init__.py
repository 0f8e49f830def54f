"""The project's command-line tools, one module per command, each with ``main(argv) -> int``.

``python -m direct2event <command> [options]`` is the one entry point (:mod:`direct2event.__main__`);
the Makefile targets call it. A command parses its arguments, calls the glue and the library, and
prints; it imports no pipeline internals (the ``run`` command hands over to Kedro).
"""
