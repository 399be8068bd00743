"""The HTTP frontend: groups queries, encodes parity queries, dispatches to workers, decodes
missing outputs, and answers each query as soon as its output (or its decode) is in."""
