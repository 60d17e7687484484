#!/usr/bin/env python3
"""Checks a message's DKIM-Signature with dkimpy, a verifier we did not write, so that the
end-to-end tests do not grade Rapport's signing with Rapport's own code. The key record that DNS
would hold comes from --public-key instead: every lookup is answered with it, and the d= and s=
asked for are printed so that a test's output shows what the signature claimed.

Exit status 0 and "DKIM OK" when the signature verifies; 1 and the reason when it does not.
"""

import argparse
import logging
import sys

import dkim


class Reasons(logging.Handler):
    """dkimpy reports why a signature failed only through its logger."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("message", type=argparse.FileType("rb"), help="the raw message (.eml)")
    parser.add_argument("--public-key", type=argparse.FileType("r"), required=True,
                        help="base64 of the DER SubjectPublicKeyInfo: the p= of the DNS record")
    args = parser.parse_args()
    message = args.message.read()
    record = f"v=DKIM1; k=rsa; p={''.join(args.public_key.read().split())}".encode()

    def dnsfunc(name, timeout=5):
        selector, _, domain = name.decode().rstrip(".").partition("._domainkey.")
        print(f"key asked for: d={domain} s={selector}")
        return record

    reasons = Reasons()
    logger = logging.getLogger("dkim_verify")
    logger.addHandler(reasons)
    logger.propagate = False
    # What dkim.verify does, with the DKIM object kept to tell "no signature" from "bad signature".
    try:
        verifier = dkim.DKIM(message, logger=logger)
        if not any(name.lower() == b"dkim-signature" for name, _ in verifier.headers):
            reasons.messages.append("the message has no DKIM-Signature header")
        elif verifier.verify(dnsfunc=dnsfunc):
            print("DKIM OK")
            return 0
    except dkim.DKIMException as error:
        reasons.messages.append(str(error))
    print("DKIM FAILED: " + ("; ".join(reasons.messages) or "the signature does not verify: the signed headers changed or another key signed them"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
