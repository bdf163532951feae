"""The wire codec (clients/records.py) and the server's FedAvg: byte- and bit-identical to Flower's own."""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity

from clients.records import ARRAYS, METRICS, decode, encode, from_record, to_record
from strategies.strategy import FedFaceAvg

CASES = [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), np.arange(5, dtype=np.int64),
         np.array(3.0), np.zeros((0, 3)), np.array([True, False]), np.ones((2, 2), dtype=">f4"),
         np.asfortranarray(np.random.default_rng(1).standard_normal((3, 4)))]


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{v.dtype.str}{v.shape}")
def test_encode_writes_what_flower_writes_and_decode_reads_what_flower_reads(value):
    ours, flowers = encode(value), Array(np.ascontiguousarray(value))
    assert (ours.data, ours.dtype, tuple(ours.shape), ours.stype) == \
           (flowers.data, flowers.dtype, tuple(flowers.shape), flowers.stype)
    decoded, expected = decode(flowers), flowers.numpy()
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape and np.array_equal(decoded, expected)
    assert decoded.flags.writeable  # a copy: the caller may update it in place


def test_decode_falls_back_to_flower_on_anything_but_the_plain_header():
    fortran = Array(np.asfortranarray(np.arange(6.0).reshape(2, 3)))  # fortran_order True: not our fast path
    assert np.array_equal(decode(fortran), fortran.numpy())
    lying = Array(np.arange(6, dtype=np.float64))  # declared shape/dtype disagree with the bytes' own header
    lying.shape, lying.dtype = (12,), "float32"  # the same byte count: only the header check tells
    assert np.array_equal(decode(lying), lying.numpy())  # what Flower would have decoded, not a reinterpretation
    truncated = Array(np.arange(6, dtype=np.float32))
    truncated.data = truncated.data[:-4]
    with pytest.raises(ValueError):
        decode(truncated)  # Flower's np.load refuses it too: the screen turns it into a rejected reply


def test_server_fedavg_is_bit_identical_to_flowers():
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    rng = np.random.default_rng(2)
    replies = []
    for n in (7, 13, 29):
        arrays = {"w": rng.standard_normal((4, 5)).astype(np.float32), "b": rng.standard_normal(5),
                  "bn.num_batches_tracked": np.array([n], dtype=np.int64)}
        replies.append(Message(content=RecordDict({ARRAYS: to_record(arrays), METRICS: MetricRecord(
            {"num-examples": n, "train_loss": float(n) / 3})}), dst_node_id=1, message_type="train"))
    strategy = FedFaceAvg({"seed": 0})
    ours, metrics = strategy.fedavg(replies)
    flowers = aggregate_arrayrecords([r.content for r in replies], "num-examples")
    assert list(ours) == list(flowers)
    for key in flowers:
        mine, theirs = from_record(ours)[key], flowers[key].numpy()
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()
    assert metrics["train_loss"] == pytest.approx(sum(n * n / 3 for n in (7, 13, 29)) / 49)
    assert isinstance(ours, ArrayRecord)


def test_a_missing_metric_crosses_the_wire_as_none():
    """A MetricRecord holds numbers only: a utility number that does not exist (None) travels as MISSING and comes
    back None; only optional metrics may be missing, and a real -1.0 of another metric stays -1.0."""
    from clients.records import MISSING, metric_record, metrics_of

    sent = {"accuracy": 0.91, "tar_at_far_1e-3": None, "epsilon": None, "head-row-cosine": -1.0}
    record = metric_record(sent)
    assert record["tar_at_far_1e-3"] == MISSING
    assert metrics_of(record) == sent
    with pytest.raises(ValueError, match="train_loss"):
        metric_record({"train_loss": None})
