#!/usr/bin/env python3
"""Checks the hash chain of a loyalty ledger with nothing but Python's standard library.

usage: python3 docs/verify-chain.py EXPORT.jsonl     (or: loyalty export ... | python3 docs/verify-chain.py -)

EXPORT is what `loyalty export --state DIR` or `loyalty fold` prints. For each account, every
`transaction` line ends with "hash": the SHA-256 (hex) of the account's previous hash (64
zeros before its first transaction), as text, followed by the line's own bytes up to (not
including) `,"hash"`, then `}`. Each `account` line's `ledgerHash` is its last transaction's
hash. Prints the first broken link and exits 1, or prints a summary and exits 0.
"""
import hashlib
import json
import sys

ZERO = "0" * 64


def main(path):
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    last = {}  # account -> its last hash
    count = 0
    for n, raw in enumerate(stream, 1):
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        if line.startswith(b'{"kind":"transaction"'):
            cut = line.rfind(b',"hash":"')
            if cut < 0 or not line.endswith(b'"}'):
                return fail(n, "a transaction line without a hash")
            stated = line[cut + len(b',"hash":"'):-2].decode("ascii", "replace")
            try:
                account = json.loads(line)["account"]
            except (ValueError, KeyError, TypeError):
                return fail(n, "a transaction line that is not JSON with an account")
            prev = last.get(account, ZERO)
            want = hashlib.sha256(prev.encode() + line[:cut] + b"}").hexdigest()
            if stated != want:
                return fail(n, f"account {account}: the line says {stated}, its bytes give {want}")
            last[account] = want
            count += 1
        elif line.startswith(b'{"kind":"account"'):
            try:
                a = json.loads(line)
                a["id"]
            except (ValueError, KeyError, TypeError):
                return fail(n, "an account line that is not JSON with an id")
            if a.get("ledgerHash") != last.get(a["id"], ZERO):
                return fail(n, f"account {a['id']}: ledgerHash {a.get('ledgerHash')} is not its last transaction's hash")
    print(f"sound: {count} transactions of {len(last)} accounts, every chain unbroken")
    return 0


def fail(n, why):
    print(f"line {n}: {why}")
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
