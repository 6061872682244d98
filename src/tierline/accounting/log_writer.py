"""The request log's writer process: `python -m tierline.accounting.log_writer DB`.

Reads batches from stdin, one JSON array of rows (in `log.COLUMNS` order) per line, and
inserts each into the SQLite database. At end of input it prints
`{"written": N, "failed": M}` and exits. It lowers its own priority: the request log can
wait, the event loop cannot.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

from tierline.accounting.logdb import connect, insert_batch


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m tierline.accounting.log_writer DB\n")
        return 2
    try:
        os.nice(10)
    except OSError:
        pass
    conn = connect(Path(argv[0]))
    written = failed = 0
    for line in sys.stdin.buffer:
        try:
            rows = orjson.loads(line)
        except orjson.JSONDecodeError:
            failed += 1
            continue
        if rows:
            w, f = insert_batch(conn, rows)
            written += w
            failed += f
    conn.close()
    sys.stdout.write(orjson.dumps({"written": written, "failed": failed}).decode() + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process
    sys.exit(main(sys.argv[1:]))
