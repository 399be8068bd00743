"""The fault-injection harness: fault plans, ``parm bench`` (real processes on loopback under an
open-loop load) and ``parm simulate`` (a discrete-event model of the same modes at any scale)."""
