"""The ``foodmesh`` commands, one module each: ``add_parser(sub)`` declares it, ``run(args)``
runs it and returns the exit status. ``foodmesh.cli`` assembles the parser and dispatches.

Modules import what they run inside ``run``: ``foodmesh --help`` (and every other
command) starts without loading the services, the simulator or the gateway.
"""
