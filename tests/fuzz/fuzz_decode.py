"""Coverage-guided fuzzing of the decoder and the fold (atheris).

    python tests/fuzz/fuzz_decode.py -runs=200000          # bounded
    python tests/fuzz/fuzz_decode.py -max_total_time=600   # longer, by hand

Each input becomes a stream entry (JSON form, flat form, or raw bytes in the
`event` field). The properties: decoding never raises; an entry is either
accepted or rejected with a non-empty reason that keeps the original fields;
an accepted event folds without raising, and its timestamp is within bounds.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from streamproc.core.decode import MAX_FUTURE_MS, Accepted, Rejected, decode_entry
    from streamproc.core.fold import Hasher, fold

NOW_MS = 1_800_000_000_000
HASHER = Hasher(b"fuzz-secret-0123456789")
KEYS = [
    b"type",
    b"site",
    b"ts",
    b"path",
    b"x",
    b"y",
    b"status",
    b"duration_ms",
    b"method",
    b"route",
    b"name",
    b"revenue",
    b"visitor",
    b"session",
    b"ip",
    b"ua",
    b"id",
    b"referrer",
    b"event",
]
TYPES = [b"page_view", b"click", b"api_request", b"conversion", b"custom", b"teleport"]


def entry_from(data: bytes) -> dict[bytes, bytes]:
    fdp = atheris.FuzzedDataProvider(data)
    form = fdp.ConsumeIntInRange(0, 2)
    if form == 0:  # raw bytes as the JSON field
        return {b"event": fdp.ConsumeBytes(fdp.remaining_bytes())}
    fields: dict[bytes, bytes] = {b"type": fdp.PickValueInList(TYPES)}
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        key = fdp.PickValueInList(KEYS) if fdp.ConsumeBool() else fdp.ConsumeBytes(8)
        fields[key] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    if form == 2:  # the same attributes as a JSON object, values as strings or numbers
        import json

        obj = {}
        for k, v in fields.items():
            text = v.decode("utf-8", "replace")
            obj[k.decode("utf-8", "replace")] = float(text) if text.replace(".", "", 1).isdigit() else text
        return {b"event": json.dumps(obj).encode()}
    return fields


def test_one_input(data: bytes) -> None:
    fields = entry_from(data)
    result = decode_entry(b"1-0", fields, NOW_MS)
    if isinstance(result, Rejected):
        assert result.reason, "rejected without a reason"
        assert result.fields is fields, "rejected entry lost its original fields"
        return
    assert isinstance(result, Accepted)
    assert 0 <= result.ts_ms <= NOW_MS + MAX_FUTURE_MS
    fold([result], HASHER)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
