"""Shared-secret handshake on worker connections (optional): the worker greets each new
connection with a random nonce; the first frame the peer sends must be HMAC-SHA256(secret, nonce),
or the connection is closed. The secret never crosses the wire, and a recorded answer is useless
on another connection. Used by workers.server (accept) and frontend.worker_client (answer).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from workers.protocol import FrameDecoder, ProtocolError, pack

ENV = "PARM_WORKER_SECRET"
NONCE_BYTES = 32
HANDSHAKE_TIMEOUT_S = 5.0
READ_CHUNK = 64 * 1024
Recv = Callable[[], Awaitable[bytes]]  # the next bytes from the peer; b"" at end of stream


class AuthError(ValueError):
    """The peer failed the handshake, or the secret is unusable."""


def read_secret(path: str | None, env: str = ENV) -> str | None:
    """A secret: from the file if given, else the environment variable ``env``, else none."""
    if path is None:
        return os.environ.get(env) or None
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise AuthError(f"cannot read the secret file {path}: {exc}") from exc
    if not secret:
        raise AuthError(f"secret file {path} is empty")
    return secret


def new_secret() -> str:
    return secrets.token_hex(32)


def mac(secret: str, nonce: bytes) -> bytes:
    return hmac.new(secret.encode(), nonce, hashlib.sha256).digest()


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: FrameDecoder,
                 secret: str) -> list[dict[str, Any]]:
    """Worker side: greet, then require a correct answer as the first frame. Returns the frames
    that arrived after it (already decoded); raises AuthError (the caller closes the connection)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    writer.write(pack({"type": "hello", "id": 0, "auth": True, "nonce": nonce}))
    await writer.drain()
    frames = await _read_frames(stream_recv(reader), decoder, HANDSHAKE_TIMEOUT_S, "peer")
    first = frames[0]
    given = first.get("mac")
    if first.get("type") != "auth" or not isinstance(given, bytes) or not hmac.compare_digest(given, mac(secret, nonce)):
        raise AuthError("wrong or missing handshake answer")
    writer.write(pack({"type": "ok", "id": first["id"]}))
    return frames[1:]


async def answer(recv: Recv, send: Callable[[bytes], None], decoder: FrameDecoder, secret: str,
                 timeout_s: float) -> list[dict[str, Any]]:
    """Client side, right after connecting: answer the worker's greeting. A worker that does not
    greet has no secret and is refused: with a secret set, every worker must prove it shares it.
    ``recv``: the next bytes from the worker (b"" at end of stream); ``send``: write a frame.
    Returns frames that arrived after the worker's acceptance; raises AuthError."""
    frames = await _read_frames(recv, decoder, timeout_s, "worker")
    greeting = frames[0]
    if greeting.get("type") != "hello" or not greeting.get("auth"):
        raise AuthError(f"expected the worker's greeting, got a {greeting.get('type')!r} frame")
    send(pack({"type": "auth", "id": 0, "mac": mac(secret, greeting.get("nonce") or b"")}))
    rest = frames[1:] or await _read_frames(recv, decoder, timeout_s, "worker")
    if rest[0].get("type") != "ok":
        raise AuthError("the worker refused the handshake")
    return rest[1:]


def stream_recv(reader: asyncio.StreamReader) -> Recv:
    """``recv`` for ``answer`` over an asyncio stream."""
    return lambda: reader.read(READ_CHUNK)


async def _read_frames(recv: Recv, decoder: FrameDecoder, timeout_s: float, peer: str) -> list[dict[str, Any]]:
    """At least one whole frame from the peer within ``timeout_s``, or AuthError."""
    async def read() -> list[dict[str, Any]]:
        while True:
            data = await recv()
            if not data:
                raise AuthError(f"the {peer} closed the connection during the handshake (wrong secret?)")
            frames = decoder.feed(data)
            if frames:
                return frames
    try:
        return await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError as exc:
        raise AuthError(f"no handshake frame from the {peer} in {timeout_s:g} s (is its secret set?)") from exc
    except ProtocolError as exc:
        raise AuthError(f"bad frame during the handshake: {exc}") from exc
