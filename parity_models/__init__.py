"""Training and evaluation of base and parity models (ParM).

data.py (datasets) -> train_base.py (base model F) -> train.py (parity model F_P for a coders/ code)
-> evaluate.py (degraded-mode accuracy); checkpoint.py and models.py are what workers load;
demo.py caches a ready pair; cli.py adds the ``parm`` subcommands.
"""
