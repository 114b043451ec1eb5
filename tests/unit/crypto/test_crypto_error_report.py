"""The error-report batch and log upload codec (bastion.crypto.error_report): round trips and bounds."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.crypto.error_report import (
    MAX_RECORDS,
    ErrorBatch,
    ErrorRecord,
    Frame,
    LogUpload,
    bounded_text,
    decode_batch,
    decode_batch_map,
    decode_log,
    encode_batch,
    encode_log,
)
from bastion.crypto.errors import MalformedInput

RECORD = ErrorRecord(
    category="AppCrash",
    event_class="Error",
    event_type="python_exception",
    component_id="app",
    version="1.0.0",
    count=3,
    first_at=10,
    last_at=20,
    description="ZeroDivisionError: division by zero",
    exit_code=1,
    uptime_s=4,
    exception="ZeroDivisionError",
    frames=(Frame("main.py", "<module>", 9), Frame("main.py", "divide", 4)),
    stderr_tail="Traceback ...",
)
BATCH = ErrorBatch(
    device_id="ab" * 32,
    batch_id="cd" * 16,
    iat=30,
    os_version="1.0.0",
    boot_slot="a",
    group_id="g1",
    installed=(("app", "1.0.0"),),
    dropped=2,
    records=(RECORD,),
)

LOG = LogUpload(device_id="ab" * 32, request_id="17", component_id="app", iat=5, text="line\n", truncated=True)

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def test_a_batch_round_trips() -> None:
    assert decode_batch(encode_batch(BATCH)) == BATCH


def test_an_empty_batch_is_the_heartbeat() -> None:
    beat = dataclasses.replace(BATCH, records=(), group_id=None, installed=())
    assert decode_batch(encode_batch(beat)) == beat


@given(count=st.integers(1, 2**32 - 1), first=st.integers(0, 2**36), span=st.integers(0, 2**36), text=_text)
def test_records_round_trip(count: int, first: int, span: int, text: str) -> None:
    record = dataclasses.replace(RECORD, count=count, first_at=first, last_at=first + span, description=text)
    batch = dataclasses.replace(BATCH, records=(record,))
    assert decode_batch(encode_batch(batch)) == batch


def test_a_log_upload_round_trips() -> None:
    upload = LogUpload(device_id="ab" * 32, request_id="17", component_id="app", iat=5, text="line\n", truncated=True)
    assert decode_log(encode_log(upload)) == upload


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "AB" * 32},
        {"batch_id": "cd" * 15},
        {"boot_slot": "c"},
        {"dropped": -1},
        {"records": (dataclasses.replace(RECORD, count=0),)},
        {"records": (dataclasses.replace(RECORD, last_at=5),)},
        {"records": (dataclasses.replace(RECORD, category="Nope"),)},
        {"records": (dataclasses.replace(RECORD, event_type="Bad Type"),)},
        {"records": (dataclasses.replace(RECORD, description="x" * 257),)},
        {"records": (RECORD,) * (MAX_RECORDS + 1)},
    ],
)
def test_out_of_bounds_batches_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedInput):
        encode_batch(dataclasses.replace(BATCH, **change))  # type: ignore[arg-type]


def test_a_decoder_refuses_unknown_keys_nulls_and_junk() -> None:
    payload = cbor2.loads(encode_batch(BATCH))
    for bad in ({**payload, "extra": 1}, {**payload, "records": [{**payload["records"][0], "signal": None}]}):
        with pytest.raises(MalformedInput):
            decode_batch(cbor2.dumps(bad, canonical=True))
    for junk in (b"", b"\xff", cbor2.dumps([1, 2]), b"\xa1" * 100):
        with pytest.raises(MalformedInput):
            decode_batch(junk)


def test_a_huge_payload_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedInput):
        decode_batch(b"\x00" * (64 * 1024 + 1))


def test_bounded_text_makes_any_text_fit() -> None:
    assert bounded_text("a\x00b", 10) == "a\ufffdb"
    assert bounded_text("abcdef", 3, keep="tail") == "def"
    assert bounded_text("abcdef", 3) == "abc"


def _reordered(value: dict[str, object]) -> dict[str, object]:
    return dict(reversed(list(value.items())))


def test_every_map_out_of_deterministic_order_is_refused() -> None:
    # The check re-encodes maps in the order they were read, then checks each map's key order
    # where the contract has maps: the batch, a record, a frame, an installed entry.
    payload = cbor2.loads(encode_batch(BATCH))
    record = payload["records"][0]
    variants = [
        _reordered(payload),
        {**payload, "records": [_reordered(record)]},
        {**payload, "records": [{**record, "frames": [record["frames"][0], _reordered(record["frames"][1])]}]},
        {**payload, "installed": [_reordered(payload["installed"][0])]},
    ]
    assert decode_batch(cbor2.dumps(payload)) == BATCH  # as read, the canonical order passes
    for variant in variants:
        with pytest.raises(MalformedInput, match="deterministic"):
            decode_batch(cbor2.dumps(variant))
    log = cbor2.loads(encode_log(LOG))
    with pytest.raises(MalformedInput, match="deterministic"):
        decode_log(cbor2.dumps(_reordered(log)))


def test_non_minimal_indefinite_duplicate_and_float_encodings_are_refused() -> None:
    good = encode_batch(BATCH)
    installed = cbor2.dumps({"component_id": "app", "version": "1.0.0"}, canonical=True)
    for part in (b"\x63iat\x18\x1e", b"\x69installed\x81" + installed, b"\x61v\x01"):
        assert part in good
    bad = [
        good.replace(b"\x63iat\x18\x1e", b"\x63iat\x19\x00\x1e"),  # iat 30 in two bytes
        good.replace(b"\x69installed\x81" + installed, b"\x69installed\x9f" + installed + b"\xff"),  # indefinite
        bytes([good[0] + 1]) + good[1:] + b"\x67dropped\x02",  # "dropped" twice
        good.replace(b"\x61v\x01", b"\x61v\xf9\x3c\x00"),  # v as the half float 1.0
        good.replace(b"\x61v\x01", b"\x61v\xfb" + b"\x3f\xf0" + b"\x00" * 6),  # v as the double 1.0
        good.replace(b"\x63iat\x18\x1e", b"\x63iat\xc1\x18\x1e"),  # iat under tag 1
    ]
    for payload in bad:
        assert payload != good
        with pytest.raises(MalformedInput):
            decode_batch(payload)


@given(st.permutations(sorted(cbor2.loads(encode_batch(BATCH))["records"][0])))
def test_a_record_decodes_only_in_its_one_key_order(order: list[str]) -> None:
    payload = cbor2.loads(encode_batch(BATCH))
    record = payload["records"][0]
    body = cbor2.dumps({**payload, "records": [{key: record[key] for key in order}]})
    if body == encode_batch(BATCH):
        assert decode_batch(body) == BATCH
    else:
        with pytest.raises(MalformedInput, match="deterministic"):
            decode_batch(body)


def test_the_map_decoder_checks_what_the_dataclass_decoder_checks() -> None:
    payload = encode_batch(BATCH)
    value = decode_batch_map(payload)
    assert value["records"][0]["frames"][1] == {"file": "main.py", "function": "divide", "line": 4}
    assert decode_batch(payload) == BATCH
    with pytest.raises(MalformedInput):
        decode_batch_map(payload.replace(b"\x63iat\x18\x1e", b"\x63iat\x19\x00\x1e"))
