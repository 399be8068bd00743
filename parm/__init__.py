"""The ``parm`` launcher: the command line, ``parm up``'s local cluster and its state file, the demo.

Arrows point one way: parm imports frontend, harness, workers, parity_models and coders; none imports parm.
"""
