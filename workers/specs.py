"""One parser for the small ``NAME[:key=value,...]`` specs of the worker command line: builtin
models, fault injection and calibrated service times all speak it."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


def parse_named(text: str, keys: Mapping[str, Iterable[str]], what: str, prefix: str = "") -> tuple[str, dict[str, str]]:
    """``prefix + 'NAME[:key=value,...]'`` -> (NAME, {key: value}), with every key among
    ``keys[NAME]``; ValueError naming the bad part and what is accepted otherwise."""
    name, _, rest = text[len(prefix):].partition(":")
    if name not in keys:
        known = ", ".join(prefix + n for n in sorted(keys))
        raise ValueError(f"unknown {what} {name!r} in {text!r}; known: {known}")
    allowed = sorted(keys[name])
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise ValueError(f"bad parameter {item!r} in {what} {text!r}; {prefix}{name} accepts {allowed}")
        params[key] = value
    return name, params
