#!/usr/bin/env python3
"""The SMTP server the end-to-end tests send to: aiosmtpd, a real implementation we did not write,
started by tests/smtp.rs. It stores each accepted message as DIR/<seq>.eml (raw bytes) and then
DIR/<seq>.json (envelope and parsed headers and bodies); the harness reads a message only once its
.json exists, so both are written to a temporary name and renamed.

Recipients pick the server's answer by local part, so one server serves every test:
reject-…@… is refused at RCPT (550), defer-N-…@… is refused with 451 the first N times that exact
address is tried, everything else is accepted. The server exits on SIGTERM, SIGINT or, with
--exit-with-stdin, when its stdin closes: that is how it follows a test process that died.
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from aiosmtpd.smtp import SMTP

DEFER = re.compile(r"defer-(\d+)-")
FOLD = re.compile(r"\r?\n(?=[ \t])")


def utf8(text):
    """The email package reads raw bytes as ASCII with surrogate escapes; SMTPUTF8 headers are
    UTF-8, and JSON cannot carry lone surrogates."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def describe(raw):
    message = email.message_from_bytes(raw, policy=email.policy.default)
    # raw_items and items walk the same header list, so they pair up in order.
    headers = [
        [name, utf8(FOLD.sub("", raw_value)), utf8(str(decoded))]
        for (name, raw_value), (_, decoded) in zip(message.raw_items(), message.items())
    ]

    def body(subtype):
        part = message.get_body(preferencelist=(subtype,))
        return None if part is None else part.get_content()

    return {"headers": headers, "html": body("html"), "text": body("plain")}


def write_atomically(path, data):
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class Handler:
    def __init__(self, directory, delay_ms):
        self.directory = directory
        self.delay = delay_ms / 1000
        self.attempts = Counter()
        # A restarted server given the same directory continues the numbering.
        existing = [int(p.stem) for p in directory.glob("*.eml") if p.stem.isdigit()]
        self.sequence = itertools.count(max(existing, default=0) + 1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local_part = address.rsplit("@", 1)[0]
        if local_part.startswith("reject-"):
            return "550 5.1.1 mailbox unavailable"
        deferral = DEFER.match(local_part)
        if deferral:
            self.attempts[address] += 1
            if self.attempts[address] <= int(deferral.group(1)):
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # aiosmtpd cancels this coroutine when the client disconnects, so a client killed during
        # the delay never gets its message stored: stored means the 250 was about to be sent.
        if self.delay:
            await asyncio.sleep(self.delay)
        raw = envelope.original_content
        # No await between taking a number and writing: concurrent sessions get distinct numbers.
        seq = next(self.sequence)
        record = {
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_to": envelope.rcpt_tos,
            "received_at": time.time(),
            **describe(raw),
            "size": len(raw),
        }
        write_atomically(self.directory / f"{seq}.eml", raw)
        write_atomically(self.directory / f"{seq}.json", json.dumps(record, ensure_ascii=False).encode())
        return "250 OK"


async def serve(args):
    loop = asyncio.get_running_loop()
    handler = Handler(args.dir, args.delay_ms)
    server = await loop.create_server(
        # hostname is given so that aiosmtpd does not ask DNS for this machine's name.
        lambda: SMTP(handler, enable_SMTPUTF8=True, decode_data=False, hostname="localhost", loop=loop),
        "127.0.0.1",
        args.port,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.exit_with_stdin:

        def wait_for_eof():
            sys.stdin.buffer.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    # Not wait_closed(): it would wait for clients that keep pooled connections open.
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--dir", type=Path, required=True, help="where accepted messages are written")
    parser.add_argument("--delay-ms", type=int, default=0, help="wait this long before answering DATA")
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin closes")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
